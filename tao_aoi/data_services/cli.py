"""Command lines of the local data-services runner and of the spec writer.

``data_services.py <category> <action> -e <spec.yaml> [key=value ...] [--cfg=job]`` is the
container's entrypoint, run locally. ``write_spec.py <category> <action> --out <path> key=value``
writes a spec file validated against the same schema.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from tao_aoi import specs
from tao_aoi.cli import OneLineParser, UsageError
from tao_aoi.data_services import registry
from tao_aoi.contract import MARK_BACKEND

PROG = "data_services.py"
WRITE_SPEC_PROG = "write_spec.py"
BACKEND_REASON_ENV = "DS_BACKEND_REASON"

_DESCRIPTION = """\
Run a TAO data-services action on this machine, with the same command line as the
data-services container: <category> <action> -e <spec.yaml> [key=value ...].
Values come from the schema defaults, then the spec file, then the trailing key=value
overrides (they win). '???' in the spec marks a mandatory value that an override must
supply. --cfg=job prints the resolved configuration as YAML and exits.
Old key names (inference_csv, output_dir) are accepted with a notice."""

_EPILOG_TEMPLATE = """\
actions:
{actions}

example:
  python3 scripts/write_spec.py gap_analysis vcn_aoi --out $W/rca/spec.yaml \\
      inference_results_dir=$W/exp/inference train_config=$W/exp/train.yaml \\
      kpi_media_path=$W/dataset
  python3 scripts/data_services.py gap_analysis vcn_aoi -e $W/rca/spec.yaml \\
      results_dir=$W/exp/rca_results/$(date +%Y-%m-%d_%H%M%S) top_k_per_label=50

Use '<category> <action> --help' for the keys of one action and their defaults.
Exit codes: 0 done, 1 goal not met (e.g. unreachable KPI), 2 bad input (nothing written)."""


def _help_parser(epilog: str, description: str = _DESCRIPTION) -> argparse.ArgumentParser:
    # help text only: the runner parses its own command line (see _parse)
    parser = OneLineParser(prog=PROG, description=description, epilog=epilog, add_help=False,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", help="action category, e.g. gap_analysis")
    parser.add_argument("action", help="action name, e.g. vcn_aoi")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="overrides; win over the spec file (parsed like Hydra: 1 is a number, null is None)")
    parser.add_argument("-e", "--experiment_spec_file", metavar="SPEC",
                        help="spec YAML (required for a run, as in current container images)")
    parser.add_argument("--cfg", choices=["job"], help="print the resolved config as YAML and exit 0")
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    return parser


def _actions_text() -> str:
    lines = []
    for category, action in sorted(registry.ACTIONS):
        lines.append(f"  {category} {action}: {registry.summary(category, action)}")
    return "\n".join(lines)


def action_help(category: str, action: str) -> str:
    schema = specs.load_schema(category, action)
    aliases = registry.aliases(category, action)
    lines = [f"{category} {action}: {registry.summary(category, action)}", "",
             f"keys (schema {specs.schema_path(category, action).name}; spec file < key=value overrides):"]
    required = set(schema.get("required", []))
    for key, prop in schema.get("properties", {}).items():
        if "default" in prop:
            default = f"default {specs.dump_yaml({'v': prop['default']}).strip()[3:]}"
        else:
            default = "mandatory (??? until set)" if key in required else "optional"
        lines.append(f"  {key} ({specs.expected_type(prop)}; {default})")
        if prop.get("description"):
            lines.append(f"      {prop['description']}")
    if aliases:
        lines.append("old names accepted: " + ", ".join(f"{o} -> {n}" for o, n in aliases.items()))
    lines.append("")
    lines.append("example:")
    lines.append(f"  python3 scripts/data_services.py {category} {action} -e spec.yaml key=value ...")
    lines.append(f"  python3 scripts/data_services.py {category} {action} -e spec.yaml --cfg=job")
    return "\n".join(lines)


def _parse(argv: Sequence[str]) -> dict:
    out = {"positional": [], "overrides": [], "spec": None, "cfg": None, "help": False}
    args = list(argv)
    i = 0
    while i < len(args):
        tok = args[i]
        if tok in ("-h", "--help"):
            out["help"] = True
        elif tok in ("-e", "--experiment_spec_file", "--experiment_spec"):
            if i + 1 >= len(args):
                raise UsageError(f"{tok} needs a spec file path")
            out["spec"] = args[i + 1]
            i += 1
        elif tok.startswith(("-e=", "--experiment_spec_file=", "--experiment_spec=")):
            out["spec"] = tok.split("=", 1)[1]
        elif tok == "--cfg" or tok.startswith("--cfg="):
            if tok == "--cfg":
                if i + 1 >= len(args):
                    raise UsageError("--cfg needs a value: --cfg=job")
                value = args[i + 1]
                i += 1
            else:
                value = tok.split("=", 1)[1]
            if value != "job":
                raise UsageError(f"--cfg={value} is not supported; use --cfg=job")
            out["cfg"] = value
        elif tok.startswith("-"):
            raise UsageError(f"unknown option {tok}; options: -e <spec.yaml>, --cfg=job, --help")
        elif "=" in tok:
            out["overrides"].append(tok)
        else:
            out["positional"].append(tok)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = _parse(argv)
    pos = opts["positional"]
    if len(pos) > 2:
        raise UsageError(f"unexpected argument(s) {' '.join(pos[2:])}; overrides are key=value")
    category = pos[0] if pos else None
    action = pos[1] if len(pos) > 1 else None
    if opts["help"]:
        if category and action and (category, action) in registry.ACTIONS:
            print(action_help(category, action))
        else:
            _help_parser(_EPILOG_TEMPLATE.format(actions=_actions_text())).print_help()
        return 0
    registry.check(category, action)
    module = registry.load(category, action)
    if opts["spec"] is None and opts["cfg"] is None:
        raise UsageError("-e <spec.yaml> is required: current data-services images require a spec file "
                         "(write one with scripts/write_spec.py, mandatory keys may stay ???)")
    cfg = specs.resolve(category, action, opts["spec"], opts["overrides"], module.ALIASES,
                        allow_missing=opts["cfg"] == "job")
    if opts["cfg"] == "job":
        sys.stdout.write(specs.dump_yaml(cfg))
        return 0
    reason = os.environ.get(BACKEND_REASON_ENV, "").strip() or "local runner"
    print(f"{MARK_BACKEND} local ({reason})", flush=True)
    return int(module.run(cfg) or 0)


_WS_DESCRIPTION = """\
Write a data-services spec YAML for <category> <action>, validated against the action's
schema: unknown keys and wrong types are refused. Every key of the schema is written
(defaults filled in); mandatory keys not given are written as '???' so they can be
supplied as overrides at run time. With --workspace, a path outside it is refused.
The write is atomic; the written path is printed."""

_WS_EPILOG = """\
example:
  python3 scripts/write_spec.py gap_analysis vcn_aoi --workspace $W \\
      --out $W/exp/rca_results/$TS/vcn_aoi_spec.yaml \\
      inference_results_dir=$W/exp/inference train_config=$W/exp/train.yaml \\
      kpi_media_path=$W/dataset results_dir=$W/exp/rca_results/$TS top_k_per_label=50

See 'python3 scripts/data_services.py --help' for the actions and their keys."""


def write_spec_main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog=WRITE_SPEC_PROG, description=_WS_DESCRIPTION, epilog=_WS_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("category", help="action category, e.g. gap_analysis")
    parser.add_argument("action", help="action name, e.g. vcn_aoi")
    parser.add_argument("values", nargs="*", metavar="key=value", help="spec values (Hydra-style parsing)")
    parser.add_argument("--out", required=True, help="spec file to write")
    parser.add_argument("--workspace", help="refuse to write outside this folder")
    args = parser.parse_intermixed_args(argv)
    registry.check(args.category, args.action)
    values, raw = specs.parse_overrides(args.values)
    path = specs.write_spec(args.category, args.action, values, args.out, workspace=args.workspace,
                            aliases=registry.aliases(args.category, args.action), raw=raw)
    print(path)
    return 0
