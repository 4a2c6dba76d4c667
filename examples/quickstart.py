"""genrec_hf quickstart on MovieLens-100k (offline, CPU).

Loads ml-100k from the recbole wheel, prints the dataset statistics, evaluates the popularity
baseline under the shared protocol (full ranking, pessimistic ties) and shows top-10
recommendations beside a few users' recent history.
"""

import argparse

from genrec_hf.baselines import PopularityRecommender
from genrec_hf.cli import format_stats
from genrec_hf.data import load_sequences
from genrec_hf.evaluation import evaluate_recommender


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--show-users", type=int, default=3)
    args = parser.parse_args()

    data = load_sequences(args.dataset)
    print(format_stats(data))

    popularity = PopularityRecommender.fit(data.splits["train"]["items"], len(data.catalog))
    for split in ("valid", "test"):
        result = evaluate_recommender(popularity, data.splits[split], split_name=split)
        print(f"\npopularity, {split}:\n{result.format()}")

    test = data.splits["test"]
    for row in test.select(range(args.show_users)):
        recent = [data.catalog.text(i) for i in row["history"][-5:]]
        top = popularity.recommend([row["history"]], top_k=10, exclude_history=True).item_ids[0].tolist()
        print(f"\nuser {row['user']}: recent history {recent}")
        print(f"  popularity top-10 (unseen): {[data.catalog.text(i) for i in top]}")


if __name__ == "__main__":
    main()
