#!/usr/bin/env python3
"""Docs that cannot drift: runs the checked examples of README.md, docs/CONFIGURATION.md and
docs/OPERATIONS.md against the built `switchyard` and a private redis-server, and checks every
`switchyard` command line of the three files against the commands' --help.

    python3 scripts/check-docs.py [--bin .build/debug/switchyard] [-v]

Python 3 standard library only. Exit status 0 when everything holds, 1 with a list of failures
(file:line: what), 2 when it cannot run at all (no binary, no redis-server).

CHECKED EXAMPLES. An HTML comment right before a fenced block (blank lines may come between; it
does not show on GitHub) makes the block a checked example:

    <!-- check: exit=64 stderr~="--lease: must be at least 500ms" -->

Values with spaces go in quotes, by the shell's rules ("…" or '…'). The block's kind decides
what runs:

  sh, bash or shell   The block runs as a bash script, one command per line (a line ending in \\
                      continues; comments and blank lines are skipped), in the Markdown file's
                      scratch directory.
  console             Lines starting with "$ " are commands; the lines after one, up to the next
                      "$ ", are what it prints (standard output and error together), checked as
                      described under OUTPUT.
  other, with file=   The block's text is written to that file name in the Markdown file's scratch
                      directory, before any example of that Markdown file runs; with run="CMD",
                      CMD then runs like a one-line sh block.
  other, with run=    The block is the expected standard output of the command CMD (see OUTPUT).

`switchyard` in a command is a copy of the built binary (on PATH, taken at the start, so a build
that lands meanwhile changes nothing); so are `swift run switchyard`, `.build/debug/switchyard`
and `.build/release/switchyard`. Every example gets the private Redis
in SWITCHYARD_REDIS_URL and a queue of its own in SWITCHYARD_QUEUE (docs-<file>-<line>); other
SWITCHYARD_* variables of the caller's environment are removed.

Keys of the annotation:

  exit=N | exit=N,M,…  The exit status of the block's switchyard commands: one value for all, or
                       one per switchyard command in order (default 0). Other commands (export,
                       echo, …) must exit 0.
  stdout~="TEXT"       TEXT occurs in the block's standard output (repeatable).
  stderr~="TEXT"       TEXT occurs in the block's standard error (repeatable).
  stdout=next          The next fenced block of the file is the block's expected standard output.
  file=NAME, run="CMD" See above.
  env="A=1 B=2"        More environment variables.
  redis=none           Neither SWITCHYARD_REDIS_URL nor SWITCHYARD_QUEUE is set (for commands
                       that must not need Redis, showing the defaults).
  timeout=SECONDS      How long the block may run (default 30).

OUTPUT. Shown output is matched line by line, with runs of spaces counting as one space: every
shown line must match an output line, in the order shown (lines not shown may come between, such
as the usage lines after an error). In a shown line, "…" stands for any text (times, ids,
numbers that change from run to run).

DRIFT CHECKS, over every sh, bash, shell and console block of the three files (checked or not)
and every inline code span that runs `switchyard`: each `switchyard <subcommand>
[<subcommand>]` must exist, and each --option given to it must be one its --help lists
(`up --worker-args …` is checked against `worker --help`). Every SWITCHYARD_* variable the three
files name must appear in the Swift code (Sources, Benchmarks, Tests), or for variables of the
deploy files and scripts, in docker-compose.yml, deploy/ or scripts/.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/CONFIGURATION.md", "docs/OPERATIONS.md"]
SHELL_LANGS = {"sh", "bash", "shell"}
COMMAND_LANGS = SHELL_LANGS | {"console"}
KNOWN_KEYS = {"exit", "stdout~", "stderr~", "stdout", "file", "run", "env", "redis", "timeout"}
REPEATABLE = {"stdout~", "stderr~"}

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
ANNOTATION = re.compile(r"^\s*<!--\s*check:(.*?)-->\s*$")
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")
SWITCHYARD_WORD = re.compile(r"(?<![\w./-])(?:swift run switchyard|(?:\S*/)?\.build/(?:debug|release)/switchyard)(?![\w-])")
IS_SWITCHYARD_COMMAND = re.compile(r"(?:^|[\s;&|(`'\"])switchyard(?:\s|$)")
RUNNING: set = set()  # process groups of the examples running now, killed on an interrupt


@dataclass
class Block:
    doc: str
    line: int  # the opening fence's line, 1-based
    lang: str
    text: str
    annotation: dict | None = None
    annotation_line: int = 0
    expected_stdout: "Block | None" = None


@dataclass
class Failures:
    items: list = field(default_factory=list)

    def add(self, doc: str, line: int, message: str) -> None:
        self.items.append(f"{doc}:{line}: {message}")


# ---------------------------------------------------------------- Markdown


def parse_annotation(text: str) -> dict:
    result: dict = {}
    for token in shlex.split(text):
        match = re.fullmatch(r"([a-z]+~?)=(.*)", token, re.S)
        if not match:
            raise ValueError(f"'{token}' is not key=value")
        key, value = match.groups()
        if key not in KNOWN_KEYS:
            raise ValueError(f"unknown key '{key}' (known: {', '.join(sorted(KNOWN_KEYS))})")
        if key in REPEATABLE:
            result.setdefault(key, []).append(value)
        elif key in result:
            raise ValueError(f"'{key}' given twice")
        else:
            result[key] = value
    return result


def extract_blocks(doc: str, text: str, failures: Failures) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown file, and its lines with the blocks blanked out."""
    lines = text.split("\n")
    blocks: list[Block] = []
    prose = list(lines)
    pending: tuple[int, str] | None = None  # an annotation waiting for its block
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            indent, marker, lang = fence.groups()
            body = []
            j = i + 1
            while j < len(lines):
                close = re.match(r"^\s*(`{3,}|~{3,})\s*$", lines[j])
                if close and close.group(1)[0] == marker[0] and len(close.group(1)) >= len(marker):
                    break
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
                j += 1
            block = Block(doc, i + 1, lang.lower(), "\n".join(body))
            if pending:
                block.annotation_line = pending[0]
                try:
                    block.annotation = parse_annotation(pending[1])
                except ValueError as e:
                    failures.add(doc, pending[0], f"bad check annotation: {e}")
                pending = None
            blocks.append(block)
            for k in range(i, min(j + 1, len(lines))):
                prose[k] = ""
            i = j + 1
            continue
        annotation = ANNOTATION.match(line)
        if annotation:
            if pending:
                failures.add(doc, pending[0], "check annotation without a fenced block after it")
            pending = (i + 1, annotation.group(1))
        elif line.strip() and pending:
            failures.add(doc, pending[0], "check annotation not followed by a fenced block")
            pending = None
        i += 1
    if pending:
        failures.add(doc, pending[0], "check annotation at the end of the file")
    # stdout=next: the next block is this one's expected output, not an example of its own.
    for k, block in enumerate(blocks):
        if block.annotation and block.annotation.get("stdout") is not None:
            if block.annotation["stdout"] != "next":
                failures.add(doc, block.annotation_line, "stdout= takes only 'next' (use stdout~= for a piece)")
            elif k + 1 >= len(blocks):
                failures.add(doc, block.annotation_line, "stdout=next, but no fenced block follows")
            else:
                block.expected_stdout = blocks[k + 1]
    return blocks, prose


# ---------------------------------------------------------------- shell text


def strip_comment(line: str) -> str:
    """The line without a trailing # comment (a # at the start of a word, outside quotes)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                continue
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def logical_lines(text: str, first_line: int) -> list[tuple[int, str]]:
    """Commands of an sh block: (line number, command), continuations joined, heredocs kept whole."""
    out: list[tuple[int, str]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        number = first_line + 1 + i
        raw = lines[i]
        i += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        command = raw
        while command.rstrip().endswith("\\") and i < len(lines):
            command = command.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", command)
        if heredoc and "<<<" not in command:
            terminator = heredoc.group(1)
            while i < len(lines):
                command += "\n" + lines[i]
                i += 1
                if lines[i - 1].strip() == terminator:
                    break
        out.append((number, command))
    return out


def console_commands(text: str, first_line: int) -> list[tuple[int, str, list[str]]]:
    """Commands of a console block: (line number, command, the output lines shown after it)."""
    out: list[tuple[int, str, list[str]]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            number = first_line + 1 + i
            command = lines[i][2:]
            i += 1
            while command.rstrip().endswith("\\") and i < len(lines):
                command = command.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
            shown = []
            while i < len(lines) and not lines[i].startswith("$ "):
                if lines[i].strip():
                    shown.append(lines[i])
                i += 1
            out.append((number, command, shown))
        else:
            i += 1
    return out


def tokens(command: str) -> list[str]:
    lexer = shlex.shlex(PLACEHOLDER.sub("PLACEHOLDER", strip_comment(command)).replace("$(", " ( "), posix=True, punctuation_chars=";&|<>()")
    lexer.commenters = ""
    lexer.wordchars += ":@%+,#{}[]!^=~*?./-"
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: check what can be read
        return command.split()


# ---------------------------------------------------------------- drift: commands and options


class HelpBook:
    """The subcommands and options of the built binary, from its --help."""

    def __init__(self, binary: str):
        self.binary = binary
        self.cache: dict[tuple, tuple[set, dict]] = {}
        self.takes_arguments: set = set()  # the paths whose --help has an ARGUMENTS section

    def read(self, path: tuple) -> tuple[set, dict] | None:
        """(options, {subcommand: is_default}) of `switchyard <path…> --help`, None if unknown."""
        if path in self.cache:
            return self.cache[path]
        run = subprocess.run([self.binary, *path, "--help"], capture_output=True, text=True, timeout=20)
        text = run.stdout + run.stderr
        if run.returncode != 0 or "OVERVIEW" not in text and "USAGE" not in text:
            self.cache[path] = None
            return None
        options: set = set()
        subcommands: dict = {}
        section = None
        for line in text.split("\n"):
            header = re.match(r"^([A-Z][A-Z ]+):", line)
            if header:
                section = header.group(1)
                if section == "ARGUMENTS":
                    self.takes_arguments.add(path)
                continue
            if section == "OPTIONS":
                m = re.match(r"^  (?:-\w, )?(--[\w-]+)(?:/(--[\w-]+))?", line)
                if m:
                    options.update(o for o in m.groups() if o)
            elif section == "SUBCOMMANDS":
                m = re.match(r"^  ([a-z][\w-]*)( \(default\))?(?:\s|$)", line)
                if m:
                    subcommands[m.group(1)] = bool(m.group(2))
        if path == ():
            # swift-argument-parser's root command takes --generate-completion-script without
            # listing it in --help: count it when it works.
            probe = subprocess.run([self.binary, "--generate-completion-script", "bash"], capture_output=True, timeout=20)
            if probe.returncode == 0:
                options.add("--generate-completion-script")
        self.cache[path] = (options, subcommands)
        return self.cache[path]

    def check(self, words: list[str]) -> list[str]:
        """Problems with `switchyard <words…>` (words up to the end of the command)."""
        words = [w.strip("[]") for w in words]
        words = [w for w in words if w and w != "…"]
        path: tuple = ()
        top = self.read(())
        if top is None:
            return ["cannot read switchyard --help"]
        options, subcommands = top
        rest = words
        # The subcommand and, for groups such as dlq, its subcommand.
        while rest and not rest[0].startswith("-"):
            word = rest[0]
            if "PLACEHOLDER" in word:
                return []
            if word in subcommands:
                path += (word,)
                rest = rest[1:]
                read = self.read(path)
                if read is None:
                    return [f"'switchyard {' '.join(path)} --help' fails"]
                group_options = options if len(path) > 1 else set()
                options, subcommands = read
                options = options | group_options
                continue
            if subcommands:  # a group: the word must be a subcommand, or an argument of its default one
                default = [name for name, is_default in subcommands.items() if is_default]
                if not default or not self.read(path + (default[0],)) or path + (default[0],) not in self.takes_arguments:
                    where = " ".join(("switchyard",) + path)
                    return [f"'{word}' is not a subcommand of {where} (see {where} --help)"]
            break
        if subcommands:  # a group without its subcommand named: its default one takes the options
            default = [name for name, is_default in subcommands.items() if is_default]
            if default:
                read = self.read(path + (default[0],))
                if read:
                    options = options | read[0]
        problems = []
        where = "switchyard " + " ".join(path) if path else "switchyard"
        for i, word in enumerate(rest):
            if word == "--worker-args" and path == ("up",):
                return problems + [f"(up --worker-args) {p}" for p in self.check(["worker", *rest[i + 1:]])]
            if word.startswith("--") and len(word) > 2:
                option = word.split("=", 1)[0]
                if option not in options:
                    problems.append(f"'{where}' has no option {option} (see {where} --help)")
        return problems


def switchyard_invocations(command: str) -> list[list[str]]:
    """The argument lists of every switchyard invocation in a shell command."""
    words = tokens(SWITCHYARD_WORD.sub("switchyard", command))
    operators = {";", "&", "&&", "|", "||", "(", ")", "$", "`", "<", ">", ">>", "<<", "2>"}
    prefixes = {"sudo", "exec", "time", "nohup", "env", "then", "do", "!"}
    found = []
    at_command = True
    i = 0
    while i < len(words):
        word = words[i]
        if word in operators or word.endswith(">"):
            at_command = word not in {"<", ">", ">>", "<<"} and not word.endswith(">")
            i += 1
            continue
        if " " in word and word.startswith("switchyard "):  # --health-cmd 'switchyard health …'
            found.extend(switchyard_invocations(word))
        if at_command and re.fullmatch(r"\w+=.*", word):
            i += 1
            continue
        if at_command and word in prefixes:
            i += 1
            continue
        if word == "exec" and i + 1 < len(words):  # docker compose exec <service> switchyard …
            j = i + 1
            while j < len(words) and words[j].startswith("-"):
                j += 1
            if j + 1 < len(words) and (words[j + 1] == "switchyard" or words[j + 1].endswith("/switchyard")):
                i = j + 1
                at_command = True
                continue
        if at_command and (word == "switchyard" or word.endswith("/switchyard")):
            j = i + 1
            while j < len(words) and words[j] not in operators and not words[j].endswith(">"):
                j += 1
            found.append(words[i + 1:j])
            i = j
            continue
        # docker run … switchyard:0.1.0 <args>: the image's entry point is switchyard.
        if re.fullmatch(r"(?:\S+/)?switchyard(?:-gpu)?:[\w.-]+", word) and words[:2] == ["docker", "run"]:
            j = i + 1
            while j < len(words) and words[j] not in operators:
                j += 1
            if j > i + 1:
                found.append(words[i + 1:j])
            i = j
            continue
        at_command = False
        i += 1
    return found


def check_command_lines(help_book: HelpBook, extracted: dict, failures: Failures) -> int:
    """Every switchyard command line of sh and console blocks and of inline code, against --help."""
    checked = 0
    for doc, (blocks, prose) in extracted.items():
        for block in blocks:
            if block.lang in SHELL_LANGS:
                commands = logical_lines(block.text, block.line)
            elif block.lang == "console":
                commands = [(n, c) for n, c, _ in console_commands(block.text, block.line)]
            else:
                continue
            for number, command in commands:
                for words in switchyard_invocations(command):
                    checked += 1
                    for problem in help_book.check(words):
                        failures.add(doc, number, problem)
        prose_text = "\n".join(prose)
        for match in re.finditer(r"`([^`]*\bswitchyard [^`]*)`", prose_text):
            number = prose_text.count("\n", 0, match.start()) + 1
            for words in switchyard_invocations(match.group(1).replace("\n", " ")):
                checked += 1
                for problem in help_book.check(words):
                    failures.add(doc, number, f"{problem}, in `{' '.join(match.group(1).split())}`")
    return checked


# ---------------------------------------------------------------- running examples


class PrivateRedis:
    def __init__(self, directory: Path):
        self.directory = directory
        self.process = None
        self.port = 0

    def start(self) -> None:
        server = shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/opt/homebrew/bin/redis-server") if os.path.exists(p)), None)
        if not server:
            raise RuntimeError("redis-server not found (see scripts/setup.sh)")
        for _ in range(5):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            with open(self.directory / "redis.log", "wb") as log:
                self.process = subprocess.Popen(
                    [server, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no", "--dir", str(self.directory)],
                    stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.process.poll() is None:
                try:  # ours, not another server that holds the port: its process_id is our child's
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                        c.sendall(b"INFO server\r\n")
                        reply = b""
                        while not re.search(rb"process_id:\d+\r\n", reply):
                            chunk = c.recv(65536)
                            if not chunk:
                                break
                            reply += chunk
                        if f"process_id:{self.process.pid}\r\n".encode() in reply:
                            return
                        if b"process_id:" in reply:
                            break  # another server: try another port
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


def normalise(line: str) -> str:
    return " ".join(line.split())


def find_shown(shown: list[str], actual: str) -> str | None:
    """None when every shown line matches an actual line, in order; else the first that does not."""
    lines = [normalise(l) for l in actual.split("\n")]
    at = 0
    for wanted in shown:
        pattern = re.compile(re.escape(normalise(wanted)).replace(re.escape("…"), ".*"))
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return wanted
        at += 1
    return None


def excerpt(text: str, limit: int = 1200) -> str:
    text = text.rstrip("\n")
    if len(text) > limit:
        text = text[:limit] + " …"
    return "\n".join("      | " + l for l in text.split("\n")) if text else "      | (nothing)"


class Runner:
    def __init__(self, bin_dir: Path, redis: PrivateRedis, scratch: Path, failures: Failures, verbose: bool):
        self.redis = redis
        self.scratch = scratch
        self.failures = failures
        self.verbose = verbose
        self.bin_dir = bin_dir
        self.examples = 0
        self.commands = 0

    def environment(self, block: Block, annotation: dict) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["TMPDIR"] = str(self.scratch)
        env.pop("XDG_RUNTIME_DIR", None)
        if annotation.get("redis") not in (None, "none"):
            raise ValueError("redis= takes only 'none'")
        if annotation.get("redis") != "none":
            env["SWITCHYARD_REDIS_URL"] = self.redis.url
            env["SWITCHYARD_QUEUE"] = f"docs-{Path(block.doc).stem.lower()}-{block.line}"
        for item in shlex.split(annotation.get("env", "")):
            name, _, value = item.partition("=")
            env[name] = value
        return env

    def run_script(self, commands: list[str], combined: bool, cwd: Path, env: dict, timeout: float):
        """Runs the commands in one bash; per command: (status or None, stdout, stderr)."""
        out = Path(tempfile.mkdtemp(dir=self.scratch, prefix="run-"))
        script = ["cd " + shlex.quote(str(cwd))]
        for n, command in enumerate(commands):
            redirect = f'>"{out}/{n}.out" 2>&1' if combined else f'>"{out}/{n}.out" 2>"{out}/{n}.err"'
            script.append("{ " + command + "\n} " + redirect + " </dev/null")
            script.append(f'echo $? >>"{out}/status"')
        process = subprocess.Popen(["bash", "-c", "\n".join(script)], env=env, cwd=cwd, start_new_session=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        RUNNING.add(process.pid)
        timed_out = False
        try:
            _, script_errors = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            _, script_errors = process.communicate()
        try:  # anything a command left running in the background
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        RUNNING.discard(process.pid)
        statuses = (out / "status").read_text().split() if (out / "status").exists() else []
        results = []
        for n in range(len(commands)):
            read = lambda suffix: (out / f"{n}.{suffix}").read_text(errors="replace") if (out / f"{n}.{suffix}").exists() else ""
            status = int(statuses[n]) if n < len(statuses) else None
            results.append((status, read("out"), "" if combined else read("err")))
        return results, timed_out, script_errors

    def expected_statuses(self, block: Block, annotation: dict, commands: list[str]) -> list[int]:
        ours = [c for c in commands if IS_SWITCHYARD_COMMAND.search(c)]
        values = [int(v) for v in annotation.get("exit", "0").split(",")]
        if len(values) == 1:
            values = values * len(ours)
        if len(values) != len(ours):
            raise ValueError(f"exit= gives {len(values)} statuses for {len(ours)} switchyard commands")
        expected, k = [], 0
        for c in commands:
            if IS_SWITCHYARD_COMMAND.search(c):
                expected.append(values[k])
                k += 1
            else:
                expected.append(0)
        return expected

    def run_block(self, block: Block, cwd: Path) -> None:
        annotation = block.annotation
        where = (block.doc, block.line)
        try:
            env = self.environment(block, annotation)
            timeout = float(annotation.get("timeout", "30"))
            shown_per_command = None
            if block.lang in SHELL_LANGS:
                numbered = logical_lines(block.text, block.line)
            elif block.lang == "console":
                parsed = console_commands(block.text, block.line)
                numbered = [(n, c) for n, c, _ in parsed]
                shown_per_command = [s for _, _, s in parsed]
            elif "run" in annotation:
                numbered = [(block.line, annotation["run"])]
            elif "file" in annotation:
                return  # a file only: written with the others
            else:
                raise ValueError(f"a '{block.lang or 'plain'}' block needs file= or run=")
            if block.lang in COMMAND_LANGS and "run" in annotation:
                raise ValueError("run= is for blocks that are not commands")
            if not numbered:
                raise ValueError("no command in the block")
            commands = [SWITCHYARD_WORD.sub("switchyard", c) for _, c in numbered]
            expected = self.expected_statuses(block, annotation, commands)
        except ValueError as e:
            self.failures.add(block.doc, block.annotation_line, f"bad check annotation: {e}")
            return
        started = time.monotonic()
        results, timed_out, script_errors = self.run_script(commands, shown_per_command is not None, cwd, env, timeout)
        self.examples += 1
        self.commands += len(commands)
        if self.verbose:
            print(f"  {block.doc}:{block.line}: {len(commands)} command(s), {time.monotonic() - started:.1f} s", file=sys.stderr)
        problems = []
        for (number, command), (status, stdout, stderr), want in zip(numbered, results, expected):
            if status is None:
                problems.append((number, f"did not finish{' within ' + str(timeout) + ' s' if timed_out else ''}: {command.strip()}", stdout, stderr))
                break
            if status != want:
                problems.append((number, f"exit status {status}, expected {want}: {command.strip()}", stdout, stderr))
        if shown_per_command is not None:
            for (number, command), (status, output, _), shown in zip(numbered, results, shown_per_command):
                missing = find_shown(shown, output) if status is not None else None
                if missing is not None:
                    problems.append((number, f"the output of `{command.strip()}` has no line matching: {missing}", output, ""))
        stdout = "".join(r[1] for r in results)
        stderr = "".join(r[2] for r in results)
        for text in annotation.get("stdout~", []):
            if text not in stdout:
                problems.append((block.line, f"standard output lacks: {text}", stdout, stderr))
        for text in annotation.get("stderr~", []):
            if text not in stderr:
                problems.append((block.line, f"standard error lacks: {text}", stdout, stderr))
        expected_block = block.expected_stdout
        if expected_block is None and block.lang not in COMMAND_LANGS and "file" not in annotation:
            expected_block = block  # a run= block is the expected output itself
        if expected_block is not None:
            shown = [l for l in expected_block.text.split("\n") if l.strip()]
            missing = find_shown(shown, stdout)
            if missing is not None:
                problems.append((expected_block.line, f"the output has no line matching: {missing}", stdout, stderr))
        if script_errors.strip():
            problems.append((block.line, f"bash: {script_errors.strip()}", "", ""))
        for number, message, out, err in problems:
            detail = f"{message}\n    stdout:\n{excerpt(out)}"
            if err:
                detail += f"\n    stderr:\n{excerpt(err)}"
            self.failures.add(block.doc, number, detail)

    def run_doc(self, doc: str, blocks: list[Block]) -> None:
        cwd = self.scratch / Path(doc).stem.lower()
        cwd.mkdir()
        written: dict = {}
        for block in blocks:
            if block.annotation and "file" in block.annotation:
                name = block.annotation["file"]
                if "/" in name or name in written:
                    self.failures.add(block.doc, block.annotation_line, f"file={name}: use a plain name, once per Markdown file")
                    continue
                written[name] = block
                (cwd / name).write_text(block.text + "\n")
        for block in blocks:
            if block.annotation is not None:
                self.run_block(block, cwd)


# ---------------------------------------------------------------- environment variables


def check_variables(doc_texts: dict, failures: Failures) -> int:
    code = []
    for folder in ("Sources", "Benchmarks", "Tests"):
        for path in (ROOT / folder).rglob("*.swift"):
            code.append(path.read_text(errors="replace"))
    code = "\n".join(code)
    deploy = []
    for path in [ROOT / "docker-compose.yml", *(ROOT / "deploy").rglob("*"), *(ROOT / "scripts").rglob("*")]:
        if path.is_file() and path.name != "check-docs.py" and path.stat().st_size < 2_000_000:
            deploy.append(path.read_text(errors="replace"))
    deploy = "\n".join(deploy)
    seen = set()
    for doc, text in doc_texts.items():
        for number, line in enumerate(text.split("\n"), 1):
            for match in re.finditer(r"SWITCHYARD_[A-Z0-9_]+", line):
                name = match.group(0)
                if name.endswith("_") or name in seen:  # SWITCHYARD_REDIS_*: a family, not a name
                    continue
                seen.add(name)
                if not re.search(rf"\b{name}\b", code) and not re.search(rf"\b{name}\b", deploy):
                    failures.add(doc, number, f"{name} appears nowhere in Sources, Benchmarks, Tests, deploy/, scripts/ or docker-compose.yml")
    return len(seen)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.environ.get("SWITCHYARD_BIN", str(ROOT / ".build/debug/switchyard")), help="the switchyard binary (default: .build/debug/switchyard, or SWITCHYARD_BIN)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each example as it runs")
    args = parser.parse_args()
    binary = str(Path(args.bin).resolve())
    if not os.access(binary, os.X_OK):
        print(f"check-docs: no switchyard binary at {binary}; build it first (swift build --product switchyard)", file=sys.stderr)
        return 2

    started = time.monotonic()
    failures = Failures()
    scratch = Path(tempfile.mkdtemp(prefix="check-docs-"))
    redis = PrivateRedis(scratch)

    def interrupted(signum, frame):
        for group in list(RUNNING):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        redis.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        sys.exit(130)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        # A copy of the binary, so that a build finishing meanwhile changes nothing under the checks.
        bin_dir = scratch / "bin"
        bin_dir.mkdir()
        shutil.copy2(binary, bin_dir / "switchyard")
        doc_texts = {doc: (ROOT / doc).read_text() for doc in DOCS}
        extracted = {doc: extract_blocks(doc, text, failures) for doc, text in doc_texts.items()}
        checked = check_command_lines(HelpBook(str(bin_dir / "switchyard")), extracted, failures)
        variables = check_variables(doc_texts, failures)
        # The checked examples, against a private Redis.
        redis.start()
        runner = Runner(bin_dir, redis, scratch, failures, args.verbose)
        for doc, (blocks, _) in extracted.items():
            runner.run_doc(doc, blocks)
    except RuntimeError as e:
        print(f"check-docs: {e}", file=sys.stderr)
        return 2
    finally:
        redis.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    summary = (f"{runner.examples} examples run ({runner.commands} commands), {checked} command lines checked "
               f"against --help, {variables} SWITCHYARD_* variables found in the code, {time.monotonic() - started:.1f} s")
    if failures.items:
        for item in failures.items:
            print(item, file=sys.stderr)
        print(f"check-docs: FAILED, {len(failures.items)} problem(s); {summary}", file=sys.stderr)
        return 1
    print(f"check-docs: OK, {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
