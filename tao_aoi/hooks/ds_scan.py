"""Run detect-secrets over files and print what it finds (run by the plugin's venv python).

Started by ``packaging`` as ``<venv python> ds_scan.py FILE...`` on the already redacted copies
of a bundle's files (they live in the bundle's private temp folder). Prints one JSON object:
``{"version": ..., "findings": [{"file": i, "line": n, "type": t, "value": v}, ...]}``; the
values travel through the pipe only, to be masked by the caller. Imports nothing of tao_aoi
(the venv holds the bank's dependencies, not the bank). The hex entropy plugin is left out:
sha256 digests and commit ids are not credentials.
"""
from __future__ import annotations

import json
import sys

_SKIP_PLUGINS = {"HexHighEntropyString"}
_MAX_LINE = 20000          # detect-secrets' regexes on one huge line cost more than they find


def main(paths: list[str]) -> int:
    import detect_secrets
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import transient_settings

    plugins = []
    for cls in get_mapping_from_secret_type_to_class().values():
        if cls.__name__ in _SKIP_PLUGINS:
            continue
        entry = {"name": cls.__name__}
        if cls.__name__ == "Base64HighEntropyString":
            entry["limit"] = 4.5
        plugins.append(entry)
    findings = []
    with transient_settings({"plugins_used": plugins}):
        for index, path in enumerate(paths):
            with open(path, encoding="utf-8", errors="replace") as fh:
                for number, line in enumerate(fh, 1):
                    if "[REDACTED:" in line and len(line) < 40:
                        continue
                    for piece in (line[i:i + _MAX_LINE] for i in range(0, len(line), _MAX_LINE - 1000)):
                        for secret in scan_line(piece):
                            value = secret.secret_value
                            if value and "REDACTED" not in value:
                                findings.append({"file": index, "line": number,
                                                 "type": secret.type, "value": value})
    json.dump({"version": getattr(detect_secrets, "__version__", "?"), "findings": findings},
              sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
