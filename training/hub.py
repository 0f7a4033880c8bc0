"""Hugging Face Hub checks shared by the training scripts: is the Hub reachable, may we push to it.

Hub calls without a network retry for tens of seconds (datasets) or fail inside the `Trainer` constructor
(`push_to_hub=True`), so the scripts check once, fast, before anything needs the Hub, and fail with a message naming
the local alternative.
"""

import functools
import os
import threading
import urllib.error
import urllib.request

from huggingface_hub import constants, get_token

REACHABILITY_TIMEOUT_S = 3.0


class HubAccessError(RuntimeError):
    """The run needs the Hugging Face Hub, which cannot be reached (or is switched off), or a token it lacks."""


def _head(url: str, answer: dict):
    """HEAD `url`; any HTTP answer (even an error status) proves the server is reachable."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=REACHABILITY_TIMEOUT_S)
    except urllib.error.HTTPError:
        pass
    except OSError as error:  # URLError, timeouts, DNS and connection errors
        answer["error"] = error
        return
    answer["ok"] = True


@functools.cache
def hub_unreachable_reason() -> str | None:
    """Why the Hub cannot be used in this process, or None when it answers. Checked once per process, within about
    3 s: `HF_HUB_OFFLINE=1` counts as unreachable; otherwise one HEAD request to the endpoint (`HF_ENDPOINT`), run
    in a daemon thread so a hanging DNS lookup cannot block the caller past the timeout."""
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES:
        return "HF_HUB_OFFLINE=1 is set"
    answer = {}
    probe = threading.Thread(target=_head, args=(constants.ENDPOINT, answer), daemon=True)
    probe.start()
    probe.join(REACHABILITY_TIMEOUT_S + 0.5)
    if answer.get("ok"):
        return None
    error = answer.get("error", "timeout")
    return f"{constants.ENDPOINT} gave no answer within {REACHABILITY_TIMEOUT_S:.0f} s ({error})"


def require_hub(what: str, instead: str):
    """Raise `HubAccessError` saying that `what` needs the Hub and which argument to give `instead`."""
    reason = hub_unreachable_reason()
    if reason is not None:
        raise HubAccessError(f"{what} needs the Hugging Face Hub, which cannot be reached: {reason}. {instead}")


def require_local_or_cached(flag: str, source: str, load, instead: str, cache_dir: str | None = None):
    """A Hub id needs the Hub unless it is in the local cache already (`load(source, local_files_only=True)`): when
    the Hub cannot be reached, raise `HubAccessError` naming `flag`, the id, why the Hub is out of reach (offline)
    and the local alternative `instead`, rather than transformers' `OSError` traceback."""
    if os.path.isdir(source) or hub_unreachable_reason() is None:
        return
    try:
        load(source, cache_dir=cache_dir, local_files_only=True)
    except OSError as error:
        raise HubAccessError(
            f"{flag} {source} is not a local folder nor in the local cache, and as a Hub id it needs the Hugging Face "
            f"Hub, which cannot be reached: {hub_unreachable_reason()}. {instead}"
        ) from error


def check_push_to_hub(hub_model_id: str | None, hub_token: str | None):
    """Before a `Trainer` with `push_to_hub=True` is built (its constructor creates the repo): the Hub must answer
    and a token must be available (`--hub_token`, `HF_TOKEN` or `hf auth login`)."""
    require_hub(
        f"--push_to_hub (repo {hub_model_id or '<output folder name>'})",
        "Drop --push_to_hub and upload the output folder later with `hf upload REPO_ID OUTPUT_DIR`.",
    )
    if not (hub_token or get_token()):
        raise HubAccessError(
            "--push_to_hub needs a Hugging Face token with write access: pass --hub_token, set HF_TOKEN, or run "
            "`hf auth login` first."
        )
