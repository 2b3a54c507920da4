"""`make lint`'s check of the page's assets (exporter/views/static, exporter/views/templates):
the script parses (node --check, where node is installed), the style parses (tinycss2), both are
formatted as js-beautify and css-beautify format them (indent 2), and every template compiles.

Usage: python scripts/check_assets.py [--fix]   (--fix rewrites the style and script formatted)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cssbeautifier
import jinja2
import jsbeautifier
import tinycss2

VIEWS = Path(__file__).resolve().parent.parent / "exporter" / "views"
OPTIONS = {"indent_size": 2, "end_with_newline": True, "max_preserve_newlines": 2}


def formatted(path: Path, text: str) -> str:
    beautify = jsbeautifier.beautify if path.suffix == ".js" else cssbeautifier.beautify
    return beautify(text, OPTIONS)


def script_errors(path: Path) -> list[str]:
    node = shutil.which("node")
    if node is None:
        print(f"check_assets: no node on PATH, {path.name} not parsed (apt-get install nodejs)")
        return []
    r = subprocess.run([node, "--check", str(path)], check=False, capture_output=True, text=True)
    return [r.stderr.strip()] if r.returncode else []


def style_errors(text: str) -> list[str]:
    rules = tinycss2.parse_stylesheet(text, skip_comments=True, skip_whitespace=True)
    return [f"line {e.source_line}: {e.message}" for e in _errors(rules)]


def _errors(rules: list) -> list:
    """Parse errors among the rules and, within each, its declarations or nested rules."""
    found = [r for r in rules if r.type == "error"]
    for rule in rules:
        if rule.type == "qualified-rule":
            found += [d for d in tinycss2.parse_blocks_contents(rule.content) if d.type == "error"]
        elif rule.type == "at-rule" and rule.content is not None:
            found += _errors(tinycss2.parse_rule_list(rule.content, True, True))
    return found


def template_errors() -> list[str]:
    """Each template compiled in the page's own environment (its filters and autoescaping)."""
    from exporter.views.render import environment

    env, errors = environment(), []
    for name in env.list_templates(extensions=["html"]):
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            errors.append(f"{name}:{exc.lineno}: {exc.message}")
    return errors


def main(argv: list[str]) -> int:
    fix, problems = "--fix" in argv, template_errors()
    for path in sorted((VIEWS / "static").iterdir()):
        text = path.read_text()
        parsed = script_errors(path) if path.suffix == ".js" else style_errors(text)
        problems += [f"{path.name}: {e}" for e in parsed]
        if formatted(path, text) != text:
            if fix:
                path.write_text(formatted(path, text))
            else:
                problems.append(
                    f"{path.name}: not formatted (python scripts/check_assets.py --fix)"
                )
    for p in problems:
        print(f"check_assets: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
