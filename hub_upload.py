"""Push a genrec_hf checkpoint folder to the Hugging Face Hub (same as `genrec-hf upload`).

    python hub_upload.py checkpoints/st2si-ml100k --repo-id your-name/st2si-ml100k --dry-run
    python hub_upload.py checkpoints/st2si-ml100k --repo-id your-name/st2si-ml100k [--private]

Checks that the folder is complete and loads (weights, remote-code files, processor matching the
model's catalog), renders the model card for the repo, then uploads. Log in first with
`hf auth login` or set HF_TOKEN; no token is ever passed on the command line.
"""

import sys

from genrec_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["upload", *sys.argv[1:]]))
