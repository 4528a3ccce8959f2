"""Generate loomk_bridge/_proto from schemas/loom/v1 (run by `make proto`).

protoc comes from grpcio-tools, so no system protoc is needed; message classes use protobuf's
upb backend and service stubs come from grpclib's own plugin. protoc writes absolute imports
(`from loom.v1 import event_pb2`); they are rewritten to relative ones so the generated
modules live inside `loomk_bridge._proto` and never claim a top-level `loom` package, which
belongs to Loom's own SDK.

Usage: python schemas/generate.py [OUTPUT_DIR]   (default: loomk_bridge/_proto)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parent
ROOT = SCHEMAS.parent
PROTOS = sorted((SCHEMAS / "loom" / "v1").glob("*.proto"))
DEFAULT_OUTPUT = ROOT / "loomk_bridge" / "_proto"
INIT = '"""Generated from schemas/loom/v1 by `make proto`; do not edit."""\n'

_FROM_IMPORT = re.compile(r"^from loom\.v1 import (\w+) as (\w+)$", re.MULTILINE)
_PLAIN_IMPORT = re.compile(r"^import loom\.v1\.(\w+)$", re.MULTILINE)
_QUALIFIED = re.compile(r"(?<![\w./])loom\.v1\.(\w+_pb2)\b")


def _relative(text: str) -> str:
    text = _FROM_IMPORT.sub(r"from . import \1 as \2", text)
    text = _PLAIN_IMPORT.sub(r"from . import \1", text)
    return _QUALIFIED.sub(r"\1", text)


def generate(output: Path) -> list[Path]:
    """Write the generated modules into `output` (replacing what is there); return them."""
    with tempfile.TemporaryDirectory() as scratch:
        plugin_dir = Path(scratch) / "bin"
        plugin_dir.mkdir()
        plugin = plugin_dir / "protoc-gen-grpclib_python"
        plugin.write_text(f"#!{sys.executable}\nfrom grpclib.plugin.main import main\nmain()\n")
        plugin.chmod(0o755)
        raw = Path(scratch) / "out"
        raw.mkdir()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{SCHEMAS}",
                f"--plugin=protoc-gen-grpclib_python={plugin}",
                f"--python_out={raw}",
                f"--pyi_out={raw}",
                f"--grpclib_python_out={raw}",
                *(str(p.relative_to(SCHEMAS)) for p in PROTOS),
            ],
            check=True,
            cwd=SCHEMAS,
        )
        if output.exists():
            shutil.rmtree(output)
        output.mkdir(parents=True)
        (output / "__init__.py").write_text(INIT)
        written = [output / "__init__.py"]
        for source in sorted((raw / "loom" / "v1").iterdir()):
            target = output / source.name
            target.write_text(_relative(source.read_text()))
            written.append(target)
        return written


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    for path in generate(output):
        print(path.relative_to(output.parent) if path.is_relative_to(output.parent) else path)


if __name__ == "__main__":
    main()
