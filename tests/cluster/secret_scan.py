"""Find committed secrets: AWS keys, private keys, literal passwords and tokens, URIs with passwords.

Placeholders are fine (`$VAR`, `${VAR}`, `<password>`, `PASSWORD`, `...`, `changeme` is NOT);
so are values taken from a variable (`password: ${{ secrets.X }}`, `secretKeyRef`).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".md", ".toml", ".cfg", ".ini", ".json", ".txt", ".env", ".conf", ""}
MAX_BYTES = 1_000_000

# A value that names a secret instead of holding it.
PLACEHOLDER = re.compile(r"""^(\$|%|<|\{|\*+$|\.\.\.|x+$|none$|null$|""$|''$)""", re.I)
PLACEHOLDER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # PASSWORD, MLFLOW_PASSWORD: names, not values

PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?access_?key\W{0,4}[:=]\s*[\"']?(?P<value>[A-Za-z0-9/+=]{40})\b"
    ),
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}\b"),
    # `password: VALUE`, `PASSWORD="VALUE"`, `"password": "VALUE"` (YAML, env, ini, JSON, code)
    "password literal": re.compile(
        r"(?i)\b[\w.-]*passw(?:or)?d[\w-]*[\"']?\s*[:=]\s*(?P<q>[\"']?)(?P<value>[^\s\"'#,;)}\]]+)(?P=q)"
    ),
    # token/secret/api key assigned a long literal (hex, base64, urlsafe)
    "token literal": re.compile(
        r"(?i)\b[\w.-]*(?:token|secret|api_?key)[\w-]*[\"']?\s*[:=]\s*(?P<q>[\"']?)"
        r"(?P<value>[A-Za-z0-9+/_=-]{20,})(?P=q)"
    ),
    "URI with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@\"']+:(?P<value>[^\s@/\"']+)@"),
}


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.text[:120]}"


def _is_placeholder(value: str, quoted: bool, code: bool) -> bool:
    value = value.strip()
    if PLACEHOLDER.match(value) or PLACEHOLDER_NAME.match(value):
        return True
    # In Python an unquoted value is an expression (password=args.password, secrets.token_hex(8)),
    # not a literal; in YAML, ini, env and shell files it is the literal itself.
    return code and not quoted and bool(re.match(r"[A-Za-z_]", value))


def scan_text(text: str, path: Path = Path("<text>")) -> list[Finding]:
    code = path.suffix == ".py"
    findings = []
    for number, line in enumerate(text.splitlines(), 1):
        if "secret-scan: ignore" in line:
            continue
        for kind, pattern in PATTERNS.items():
            for match in pattern.finditer(line):
                value = match.groupdict().get("value")
                quoted = bool(match.groupdict().get("q")) or "q" not in match.groupdict()
                if value is not None and _is_placeholder(value, quoted, code):
                    continue
                if kind == "token literal" and not _looks_random(value):
                    continue
                findings.append(Finding(path, number, kind, line.strip()))
    return findings


def _looks_random(value: str) -> bool:
    """Long literals that are words (`ray_auth_token_path_default`) are names, not tokens."""
    has_digit = any(c.isdigit() for c in value)
    has_upper, has_lower = any(c.isupper() for c in value), any(c.islower() for c in value)
    return has_digit and (has_upper or has_lower) and "_" not in value.strip("_")[:1]


def repository_files(root: Path) -> list[Path]:
    """Tracked files plus untracked ones git does not ignore (what a `git add -A` would commit)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return sorted({root / name for name in listed.decode().split("\0") if name})


def scan_files(paths: list[Path], root: Path | None = None) -> list[Finding]:
    findings = []
    for path in paths:
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES or path.stat().st_size > MAX_BYTES:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        shown = path.relative_to(root) if root else path
        findings += scan_text(text, shown)
    return findings
