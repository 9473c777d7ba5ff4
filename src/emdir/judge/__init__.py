"""Judging answers: one interface over backends; judged rows carry scores, a category and the judge.

`judge_file` judges a generation file (`judge_files`: several, one job's) with the backend that `judge.backend` names, one of
BACKENDS (`backends`, which also says how to add one). The modules, by backend:

    offline   backend `offline`: the detector's code / prose / garbled (`detector`) and
              coherence under the base model (`coherence`); no network
    llm       backend `openai`: an LLM judge; its settings (`settings`), the requests and the
              scores read from replies (`llm_replies`), sending them (`llm_client`) through
              the cache of paid replies (`cache`), with the prompts of `prompts`

`rows` is what every backend's judged rows share and the check before they are written;
`plan` prices judging before paying, `validate` measures the detector against hand labels.
`scoring_config` is the part of the `judge` config that shapes scores: a judge job's settings.
"""

from __future__ import annotations

from emdir.judge.backends import BACKENDS, check_config, judge_file, judge_files, judge_rows
from emdir.judge.settings import scoring_config

__all__ = [
    "BACKENDS",
    "check_config",
    "judge_file",
    "judge_files",
    "judge_rows",
    "scoring_config",
]
