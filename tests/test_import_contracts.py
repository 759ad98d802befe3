"""The import contracts of ``.importlinter`` (run by ``make lint``) hold on Pochta, and
they are not vacuous: the same contracts, pointed at a small package that breaks each of
them, fail and name every violation."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# A package shaped like Pochta. ``clean`` keeps every contract; each entry of
# ``VIOLATIONS`` adds the imports that break one.
CLEAN = {
    "__init__.py": "",
    "__main__.py": "from .cli import main\n",
    "cli.py": "from . import services\nfrom .queue import cli\n",
    "cliutil.py": "",
    "context.py": "from . import config, services\n",
    "config/__init__.py": "from ..queue.settings import QueueConfig\n",
    "proto/__init__.py": "",
    "proto/smtp.py": "import re\nfrom . import imap\nfrom ..mail import flags\n",
    "proto/imap.py": "import asyncio\n",
    "mail/__init__.py": "",
    "mail/flags.py": "import email.utils\n",
    "storage/__init__.py": "",
    "storage/store.py": "from ..config import QueueConfig\nfrom ..proto import smtp\n",
    "services/__init__.py": "from ..storage import store\n",
    "queue/__init__.py": "",
    "queue/settings.py": "import dataclasses\nQueueConfig = dataclasses.dataclass\n",
    "queue/worker.py": "from ..services import store\n",
    "queue/cli.py": "from ..cliutil import *\nfrom .. import services\n",
    "server/__init__.py": "from ..queue import worker\nfrom ..services import store\n",
    "web/__init__.py": "",
    "web/ops_cli.py": "from ..cliutil import *\n",  # a command-line module of its own
    "acl_cli.py": "from .cliutil import *\n",
    "metadata_cli.py": "from .cliutil import *\nfrom .server import app\n",
}
VIOLATIONS = {
    "proto imports only the standard library, proto and pochta.mail": {
        "proto/imap.py": "import asyncio\nfrom .. import config\nimport dns.resolver\n",
    },
    "pochta.mail (shared mail primitives) imports only the standard library": {
        "mail/flags.py": "import email.utils\nimport dns.resolver\n",
    },
    "storage and queue never import server": {
        "queue/worker.py": "from ..services import store\nfrom ..server import app\n",
    },
    "services never import server or the command line": {
        "services/__init__.py": "from ..storage import store\nfrom .. import cliutil\n",
    },
    "a feature's settings module never leads back to the configuration or above": {
        "queue/settings.py": "from ..config import X\n",
    },
    "only the command line imports command-line modules": {
        "storage/store.py": "from ..queue import cli\n",
    },
    "no import cycles between the packages of pochta (at every level)": {
        "storage/__init__.py": "from ..services import x\n",
    },
}


def write_package(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / "fakepochta" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (base / "fakepochta" / "server" / "app.py").write_text("")


def contracts_for(base: Path) -> Path:
    """Pochta's own contracts, renamed to the fake package (its listed exceptions name
    Pochta's modules: they match nothing there, which is no error here)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    for section in parser.sections():
        for key, value in parser[section].items():
            parser[section][key] = value.replace("pochta", "fakepochta")
        if parser.has_option(section, "ignore_imports") and parser[section].get(
                "type") != "stdlib_only":
            parser[section]["unmatched_ignore_imports_alerting"] = "none"
    config = base / ".importlinter"
    with config.open("w") as f:
        parser.write(f)
    return config


def lint(base: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{base}{os.pathsep}{ROOT}"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(contracts_for(base))],
                          cwd=base, env=env, capture_output=True, text=True, timeout=120)


def test_pochta_keeps_its_contracts() -> None:
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_clean_package_keeps_them(tmp_path: Path) -> None:
    write_package(tmp_path, CLEAN)
    result = lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 kept, 0 broken" in result.stdout


def test_every_violation_breaks_its_contract(tmp_path: Path) -> None:
    for i, (contract, files) in enumerate(VIOLATIONS.items()):
        base = tmp_path / str(i)
        write_package(base, {**CLEAN, **files})
        result = lint(base)
        assert result.returncode == 1, (contract, result.stdout + result.stderr)
        expected = contract.replace("pochta", "fakepochta")
        assert f"{expected} BROKEN" in result.stdout, (contract, result.stdout)
