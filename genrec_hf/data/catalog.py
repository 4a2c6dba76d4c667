"""Item catalog: contiguous ids 0..N-1 <-> original ids, item attributes and text templates."""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable, Mapping, Sequence

CATALOG_FILE = "item_catalog.json"


def _join(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value if v not in (None, ""))
    return str(value)


def _title(fields: Mapping, original_id: str) -> str:
    title = _join(fields.get("title"))
    return title if title else f"item {original_id}"


def _template_title(fields: Mapping, original_id: str) -> str:
    return _title(fields, original_id)


def _template_title_year_genres(fields: Mapping, original_id: str) -> str:
    text = _title(fields, original_id)
    year = _join(fields.get("year"))
    if year:
        text += f" ({year})"
    genres = _join(fields.get("genres") or fields.get("categories"))
    if genres:
        text += f"; genres: {genres}"
    return text


def _template_attributes(fields: Mapping, original_id: str) -> str:
    # Recformer-style "key: value" attribute list, title first.
    parts = [f"title: {_title(fields, original_id)}"]
    for key, value in fields.items():
        if key == "title":
            continue
        value = _join(value)
        if value:
            parts.append(f"{key}: {value}")
    return "; ".join(parts)


TEMPLATES: dict[str, Callable[[Mapping, str], str]] = {
    "title": _template_title,
    "title_year_genres": _template_title_year_genres,
    "attributes": _template_attributes,
}


def render_item_text(template: str, fields: Mapping, original_id: str) -> str:
    """Render one item's text. `template` is a named template or a format string ("{title} ({year})")."""
    if template in TEMPLATES:
        return TEMPLATES[template](fields, original_id)
    values = {key: _join(value) for key, value in fields.items()}
    values.setdefault("id", original_id)
    try:
        return template.format(**values).strip()
    except KeyError as err:
        raise ValueError(
            f"item text template {template!r} uses field {err.args[0]!r}, which item {original_id!r} "
            f"does not have (fields: {sorted(values)}); named templates: {sorted(TEMPLATES)}"
        ) from None


def _check_template(template: str) -> None:
    if template in TEMPLATES:
        return
    if "{" not in template:
        raise ValueError(
            f"unknown item text template {template!r}: use one of {sorted(TEMPLATES)} or a format "
            "string such as '{title} ({year})'"
        )


class ItemCatalog:
    """The items of one dataset with contiguous ids ``0..N-1``.

    Ids are assigned in the natural order of the original ids (numbers numerically), never in
    the order items appear in sequences. Where the dataset itself numbered items in order of
    first appearance (P5 files), the ids inherit that order: never write them into model inputs
    as text (GenRec uses a seeded permutation for that).
    """

    def __init__(
        self,
        original_ids: Sequence[str],
        attributes: Sequence[Mapping] | None = None,
        template: str = "title",
    ):
        _check_template(template)
        self._original_ids = [str(i) for i in original_ids]
        if len(set(self._original_ids)) != len(self._original_ids):
            raise ValueError("item catalog has duplicate original ids")
        if attributes is None:
            attributes = [{} for _ in self._original_ids]
        if len(attributes) != len(self._original_ids):
            raise ValueError(
                f"item catalog: {len(attributes)} attribute rows for {len(self._original_ids)} items"
            )
        self._attributes = [dict(a) for a in attributes]
        self._index = {oid: i for i, oid in enumerate(self._original_ids)}
        self.template = template
        self._texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self._original_ids)

    def __repr__(self) -> str:
        return f"ItemCatalog(num_items={len(self)}, template={self.template!r})"

    def _check_id(self, item_id: int) -> int:
        item_id = int(item_id)
        if not 0 <= item_id < len(self):
            raise KeyError(f"unknown item id {item_id}: catalog ids run from 0 to {len(self) - 1}")
        return item_id

    def original_id(self, item_id: int) -> str:
        return self._original_ids[self._check_id(item_id)]

    def attributes(self, item_id: int) -> dict:
        return dict(self._attributes[self._check_id(item_id)])

    def text(self, item_id: int) -> str:
        return self.texts()[self._check_id(item_id)]

    def texts(self) -> list[str]:
        """All item texts, index = catalog id (rendered once, then cached)."""
        if self._texts is None:
            self._texts = [
                render_item_text(self.template, attrs, oid)
                for oid, attrs in zip(self._original_ids, self._attributes)
            ]
        return self._texts

    def with_template(self, template: str) -> "ItemCatalog":
        return ItemCatalog(self._original_ids, self._attributes, template)

    def id_of(self, original_id) -> int:
        """Catalog id of an original item id; KeyError naming the id if the catalog lacks it."""
        try:
            return self._index[str(original_id)]
        except KeyError:
            raise KeyError(f"unknown item {original_id!r}: not in the catalog ({len(self)} items)") from None

    def ids_of(self, original_ids: Iterable) -> list[int]:
        return [self.id_of(o) for o in original_ids]

    @property
    def original_ids(self) -> list[str]:
        return list(self._original_ids)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "template": self.template,
            "num_items": len(self),
            "original_ids": self._original_ids,
            "attributes": self._attributes,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "ItemCatalog":
        catalog = cls(d["original_ids"], d.get("attributes"), d.get("template", "title"))
        if "num_items" in d and d["num_items"] != len(catalog):
            raise ValueError(
                f"item catalog says num_items={d['num_items']} but lists {len(catalog)} items"
            )
        return catalog

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CATALOG_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)
        os.replace(tmp, path)  # never leave a half-written catalog behind
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "ItemCatalog":
        path = os.path.join(directory, CATALOG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no item catalog in {directory!s}: expected {CATALOG_FILE}")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
