"""Run detect-secrets over files and print what it finds (run by the plugin's venv python).

Started by ``tao_aoi/hooks/packaging.py`` as
``<venv python> -I secret_scan.py BUDGET_S MAX_BYTES FILE...`` on the already redacted copies of
a bundle's files (they live in the bundle's private temp folder). Prints one
JSON object: ``{"version": ..., "scanned": [i, ...], "findings": [{"file": i, "line": n,
"type": t, "value": v}, ...]}``; values travel through the pipe only, to be masked by the
caller. Files are scanned smallest first with detect-secrets' default plugins and filters
(its own heuristics against false positives), less the hex-entropy plugin (sha256 digests and
commit ids are not credentials) and the public-IP one; a file is started only while the time
budget lasts and only up to MAX_BYTES, so a huge transcript stays unscanned (``scanned`` says
which were; the builtin rules have redacted every file already). It lives outside
``tao_aoi/hooks`` because it needs a third-party package; it imports nothing of tao_aoi: the
venv holds the bank's dependencies, not the bank. For a transcript too big to be scanned, the
packaging hook starts this scan on the other files while it redacts the transcript.
"""
from __future__ import annotations

import json
import os
import sys
import time

_SKIP_PLUGINS = ("HexHighEntropyString", "IPPublicDetector")


def main(argv: list[str]) -> int:
    import detect_secrets
    from detect_secrets.core.scan import scan_file
    from detect_secrets.settings import default_settings, get_settings

    budget, max_bytes, paths = float(argv[0]), int(argv[1]), argv[2:]
    deadline = time.monotonic() + budget
    findings, scanned = [], []
    order = sorted(range(len(paths)), key=lambda i: os.path.getsize(paths[i]))
    with default_settings():
        get_settings().disable_plugins(*_SKIP_PLUGINS)
        for index in order:
            if time.monotonic() > deadline:
                break
            if os.path.getsize(paths[index]) > max_bytes:
                continue
            for secret in scan_file(paths[index]):
                value = secret.secret_value
                if value and "REDACTED" not in value:
                    findings.append({"file": index, "line": secret.line_number,
                                     "type": secret.type, "value": value})
            scanned.append(index)
    json.dump({"version": getattr(detect_secrets, "__version__", "?"), "scanned": sorted(scanned),
               "findings": findings}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
