"""README.md and docs/*.md: every command shown runs as written, as far as
can be checked without running it.

- Commands (lines of ```sh blocks and inline code spans that start with
  `python -m ...` or `make ...`): a `hyperprompt_jax.<command>` imports and
  its own argument parsing accepts the flags as written; its gin files exist
  and, with its `--gin.KEY=VALUE` bindings, parse (misspelled macros are
  refused); `t5x.<binary>` gin files exist and parse where t5x is installed;
  `make` targets are Makefile targets.
- Every `gin/...gin` named anywhere exists; ```gin blocks parse on top of a
  run file; bindings shown alone are valid gin and name known macros.
- Relative links and images point to files (and headings) that exist.
- README.md has at most 250 lines and links every docs page.

Placeholders: `<variant>` stands for every variant (each must work);
elsewhere in a gin path `<name>` and `*` must match at least one file, and
`{a,b}` expands. `...` in a command is left out. Nothing here trains.
"""

import argparse
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import io
import itertools
import pathlib
import re
import shlex
import sys

import gin
import pytest

from hyperprompt_jax import gin_utils

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN_DIR = ROOT / 'gin'
DOCS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
MAX_README_LINES = 250
SHELL_LANGUAGES = ('', 'sh', 'bash', 'shell', 'console')
VARIANTS = tuple(sorted(p.stem for p in (GIN_DIR / 'variants').glob('*.gin')
                        if p.stem != 'hyperprompt'))
# Shown on purpose as what the trainer refuses.
DELIBERATELY_WRONG_MACROS = ('LEARNIN_RATE',)
# A ```gin block is parsed on top of this run.
GIN_BLOCK_RUN = 'runs/synthetic_global_tiny.gin'
# `python -m t5x.<binary>` -> the function its gin files bind in `__main__`.
T5X_MAIN_FUNCTIONS = {'train': 'train', 'eval': 'evaluate', 'infer': 'infer'}


@dataclasses.dataclass(frozen=True)
class Command:
  doc: str  # e.g. 'docs/training.md:12'
  text: str

  def __str__(self):
    return self.doc


def _relative(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT))


def _fenced_blocks(text: str):
  """(language, first line number, lines) of each ``` block."""
  lines = text.split('\n')
  i = 0
  while i < len(lines):
    match = re.match(r'^\s*```\s*([\w-]*)\s*$', lines[i])
    if not match:
      i += 1
      continue
    start = i + 1
    i += 1
    while i < len(lines) and not re.match(r'^\s*```\s*$', lines[i]):
      i += 1
    yield match.group(1), start + 1, lines[start:i]
    i += 1


def _prose(text: str) -> str:
  """The text with fenced blocks blanked out (line numbers kept)."""
  lines = text.split('\n')
  inside = False
  for i, line in enumerate(lines):
    if re.match(r'^\s*```', line):
      inside = not inside
      lines[i] = ''
    elif inside:
      lines[i] = ''
  return '\n'.join(lines)


def _line_of(text: str, offset: int) -> int:
  return text.count('\n', 0, offset) + 1


def _is_command(text: str) -> bool:
  words = [w for w in text.split() if not re.match(r'^[A-Z_][A-Z0-9_]*=', w)]
  if words[:1] == ['time']:
    words = words[1:]
  return bool(words) and (words[0] == 'make' or (
      re.match(r'^(\S*/)?python3?$', words[0]) is not None
      and words[1:2] == ['-m'] and len(words) > 2
      and words[2].startswith(('hyperprompt_jax', 't5x'))))


@functools.cache
def _commands() -> tuple[Command, ...]:
  found = []
  for path in DOCS:
    text = path.read_text()
    for language, first, lines in _fenced_blocks(text):
      if language not in SHELL_LANGUAGES:
        continue
      logical, start = '', None
      for number, line in enumerate(lines, first):
        start = number if start is None else start
        if line.rstrip().endswith('\\'):
          logical += line.rstrip()[:-1] + ' '
          continue
        logical += line
        if _is_command(logical.strip()):
          found.append(Command(f'{_relative(path)}:{start}', logical.strip()))
        logical, start = '', None
    prose = _prose(text)
    for match in re.finditer(r'`([^`]+)`', prose):
      span = ' '.join(match.group(1).split())
      if _is_command(span):
        found.append(Command(
            f'{_relative(path)}:{_line_of(prose, match.start())}', span))
  return tuple(found)


def _expand_braces(text: str) -> list[str]:
  match = re.search(r'\{([^{}]*)\}', text)
  if not match:
    return [text]
  return [expanded for option in match.group(1).split(',')
          for expanded in _expand_braces(
              text[:match.start()] + option + text[match.end():])]


def _expand_variants(text: str) -> list[str]:
  return ([text.replace('<variant>', v) for v in VARIANTS]
          if '<variant>' in text else [text])


def _tokens(command: Command) -> list[str]:
  words = shlex.split(command.text, comments=True)
  while words and (re.match(r'^[A-Z_][A-Z0-9_]*=', words[0])
                   or words[0] == 'time'):
    words = words[1:]
  return [w for w in words if w != '...']


def _flag_values(argv, flag):
  """Values of `--flag=V` and `--flag V` in argv."""
  values = []
  for i, arg in enumerate(argv):
    if arg.startswith(f'{flag}='):
      values.append(arg[len(flag) + 1:])
    elif arg == flag and i + 1 < len(argv):
      values.append(argv[i + 1])
  return values


def _bindings(argv) -> list[str]:
  out = []
  for arg in argv:
    if arg.startswith('--gin.'):
      key, _, value = arg[len('--gin.'):].partition('=')
      out.append(f'{key} = {value}')
  return out + _flag_values(argv, '--gin_bindings')


def _search_paths(argv) -> list[str]:
  return [str(ROOT / p) for value in _flag_values(argv, '--gin_search_paths')
          for p in value.split(',') if p]


def _find_gin_file(name: str, search_paths) -> pathlib.Path | None:
  for directory in [*map(pathlib.Path, search_paths), ROOT, GIN_DIR]:
    if (directory / name).is_file():
      return directory / name
  return None


def _parse_gin(files, bindings, search_paths, command):
  for name in files:
    assert _find_gin_file(name, search_paths), (
        f'{command}: gin file {name} not found in '
        f'{[*search_paths, ".", "gin"]} ({command.text})')
  gin.clear_config(clear_constants=True)
  try:
    gin_utils.parse_gin(files, bindings, search_paths)
  except Exception as e:  # pylint: disable=broad-except
    pytest.fail(f'{command}: gin files {files} with bindings {bindings} do '
                f'not parse: {type(e).__name__}: {e}')
  finally:
    gin.clear_config(clear_constants=True)


class _Parsed(Exception):
  """Raised by a patched `ArgumentParser.parse_args` once it has parsed."""

  def __init__(self, namespace):
    super().__init__()
    self.namespace = namespace


def _parse_command_line(module, argv, command):
  """The command's own parsing of argv (its `parse_args`, or the parser its
  `main` builds, stopped right after parsing)."""
  stderr = io.StringIO()
  try:
    with contextlib.redirect_stderr(stderr):
      if hasattr(module, 'parse_args'):
        return module.parse_args(argv)
      original = argparse.ArgumentParser.parse_args

      def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

      with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, 'parse_args', parse_then_stop)
        try:
          module.main(argv)
        except _Parsed as parsed:
          return parsed.namespace
      pytest.fail(f'{command}: {module.__name__}.main ran without parsing '
                  'its arguments')
  except SystemExit:
    pytest.fail(f'{command}: {module.__name__} refuses {argv}: '
                f'{stderr.getvalue().strip()}')
  except ValueError as e:
    pytest.fail(f'{command}: {module.__name__} refuses {argv}: {e}')


def _check_hyperprompt_command(name, argv, command):
  assert importlib.util.find_spec(f'hyperprompt_jax.{name}'), (
      f'{command}: no module hyperprompt_jax.{name}')
  # The tools run through a shim of that name; the module holds `main`.
  tool = importlib.util.find_spec(f'hyperprompt_jax.tools.{name}')
  module = importlib.import_module(tool.name if tool else
                                   f'hyperprompt_jax.{name}')
  assert hasattr(module, 'main'), f'{command}: {module.__name__} has no main'
  argv = [a for a in argv if a != '--verbose']  # Every command takes it.
  if not argv:
    return  # The command only named, e.g. in a sentence.
  parsed = _parse_command_line(module, argv, command)
  if '--' in argv:  # tpu_launch run -- <command on every worker>
    inner = argv[argv.index('--') + 1:]
    _check_tokens(inner, command)
  files = _flag_values(argv, '--gin_file')
  bindings = _bindings(argv)
  search = _search_paths(argv)
  if name == 'compare' and hasattr(parsed, 'runs'):
    for run in parsed.runs():
      if getattr(run, 'seed', 0) == 0:  # Seeds differ in RANDOM_SEED only.
        _parse_gin(*parsed.gin_args(run), search, command)
  elif name == 'plan' and _flag_values(argv, '--run'):
    for run in _flag_values(argv, '--run'):
      _parse_gin([*files, run], bindings, search, command)
  elif files or bindings:
    _parse_gin(files, bindings, search, command)


def _check_t5x_command(binary, argv, command):
  search = _search_paths(argv)
  files = _flag_values(argv, '--gin_file')
  missing = [f for f in files if not _find_gin_file(f, search)]
  try:
    t5x_main = importlib.import_module(f't5x.{binary}')
    from t5x import gin_utils as t5x_gin_utils  # pylint: disable=g-import-not-at-top
    from t5x import train as t5x_train  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    assert not [f for f in missing if not f.startswith('t5x/configs/')], (
        f'{command}: gin files {missing} not found ({command.text})')
    pytest.skip(f't5x is not importable ({e}); its own gin files and the '
                'parse are not checked')
  search = [*search, *t5x_train._DEFAULT_GIN_SEARCH_PATHS]  # pylint: disable=protected-access
  with pytest.MonkeyPatch.context() as patch:
    function = T5X_MAIN_FUNCTIONS.get(binary)
    if function and hasattr(t5x_main, function):
      patch.setattr(sys.modules['__main__'], function,
                    getattr(t5x_main, function), raising=False)
    gin.clear_config(clear_constants=True)
    try:
      t5x_gin_utils.parse_gin_flags(search, files, _bindings(argv),
                                    finalize_config=False)
    except Exception as e:  # pylint: disable=broad-except
      pytest.fail(f'{command}: t5x.{binary} gin files do not parse: '
                  f'{type(e).__name__}: {e}')
    finally:
      gin.clear_config(clear_constants=True)


@functools.cache
def _make_targets() -> frozenset[str]:
  text = (ROOT / 'Makefile').read_text()
  return frozenset(re.findall(r'^([A-Za-z][\w.-]*)\s*:(?!=)', text, re.M))


def _check_tokens(tokens, command):
  if tokens[0] == 'make':
    targets = [t for t in tokens[1:] if '=' not in t and not t.startswith('-')]
    for target in targets:
      assert target in _make_targets(), (
          f'{command}: `make {target}` is not a Makefile target')
    return
  assert tokens[1] == '-m', command
  module = tokens[2]
  if '<' in module or '*' in module:
    return  # `python -m hyperprompt_jax.<command>`: a pattern, not a command.
  for arg in tokens[3:]:
    placeholders = set(re.findall(r'<[^<>]*>', arg)) - {'<variant>'}
    assert not placeholders, (
        f'{command}: write a concrete value for {placeholders} in {arg}')
  for argv in itertools.product(*(_expand_variants(a) for a in tokens[3:])):
    argv = list(argv)
    if module.startswith('hyperprompt_jax.'):
      _check_hyperprompt_command(module[len('hyperprompt_jax.'):], argv,
                                 command)
    elif module.startswith('t5x.'):
      _check_t5x_command(module[len('t5x.'):], argv, command)
    else:
      pytest.fail(f'{command}: unknown module {module}')


def test_the_docs_show_commands():
  texts = {c.text for c in _commands()}
  assert {'make train', 'make test'} <= texts
  assert any(t.startswith('python -m hyperprompt_jax.train --gin_file=')
             for t in texts)


@pytest.mark.parametrize('command', _commands(), ids=str)
def test_command_runs_as_written(command, monkeypatch):
  monkeypatch.chdir(ROOT)  # Commands run from the repository root.
  _check_tokens(_tokens(command), command)


def _gin_mentions():
  for path in DOCS:
    text = path.read_text()
    for match in re.finditer(r'(?<![\w.-])gin/[\w./<>*{},-]*?\.gin(?![\w])',
                             text):
      yield f'{_relative(path)}:{_line_of(text, match.start())}', match.group()


@pytest.mark.parametrize('where,name', list(_gin_mentions()))
def test_gin_file_named_exists(where, name):
  for expanded in _expand_braces(name):
    for candidate in _expand_variants(expanded):
      pattern = re.sub(r'<[^<>]*>', '*', candidate)
      matches = list(ROOT.glob(pattern)) if '*' in pattern else (
          [ROOT / pattern] if (ROOT / pattern).is_file() else [])
      assert matches, f'{where}: {candidate} does not exist'


def _gin_blocks():
  for path in DOCS:
    for language, first, lines in _fenced_blocks(path.read_text()):
      if language == 'gin':
        yield f'{_relative(path)}:{first}', tuple(
            line for line in lines if line.strip())


@pytest.mark.parametrize('where,lines', list(_gin_blocks()))
def test_gin_block_parses(where, lines, monkeypatch):
  monkeypatch.chdir(ROOT)
  _parse_gin([GIN_BLOCK_RUN], list(lines), [], where)


@functools.cache
def _defined_macros() -> frozenset[str]:
  names = set()
  for path in GIN_DIR.rglob('*.gin'):
    names.update(re.findall(r'^([A-Z_][A-Z0-9_]*)\s*=', path.read_text(), re.M))
  return frozenset(names)


def _bindings_alone():
  """`--gin.KEY=VALUE` spans of prose (commands are checked as a whole)."""
  for path in DOCS:
    prose = _prose(path.read_text())
    for match in re.finditer(r'`(--gin\.[^`]+)`', prose):
      yield f'{_relative(path)}:{_line_of(prose, match.start())}', ' '.join(
          match.group(1).split())


@pytest.mark.parametrize('where,flag', list(_bindings_alone()))
def test_binding_shown_alone_is_valid(where, flag):
  [binding] = _bindings(shlex.split(flag))
  key = binding.partition('=')[0].strip()
  if key == 'KEY':
    return  # The flag's notation, `--gin.KEY=VALUE`.
  if key.isidentifier():  # A macro.
    assert key in _defined_macros() or key in DELIBERATELY_WRONG_MACROS, (
        f'{where}: no gin file defines the macro {key}')
  parser = gin.config_parser.ConfigParser(
      binding, gin.config.ParserDelegate(skip_unknown=True))
  try:
    list(parser)
  except SyntaxError as e:
    pytest.fail(f'{where}: {flag} is not a valid gin binding: {e}')


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return text.replace(' ', '-')


@functools.cache
def _anchors(path: pathlib.Path) -> frozenset[str]:
  out, counts = set(), {}
  for line in _prose(path.read_text()).split('\n'):
    match = re.match(r'^#{1,6}\s+(.*)$', line)
    if match:
      slug = _slug(match.group(1))
      n = counts.get(slug, 0)
      counts[slug] = n + 1
      out.add(slug if n == 0 else f'{slug}-{n}')
  return frozenset(out)


def _links():
  for path in DOCS:
    prose = _prose(path.read_text())
    for match in re.finditer(r'!?\[[^\]]*\]\(([^)\s]+)\)', prose):
      target = match.group(1)
      if not re.match(r'^[a-z][a-z+.-]*:', target):  # Not http:, mailto:...
        yield path, _line_of(prose, match.start()), target


@pytest.mark.parametrize(
    'path,line,target', list(_links()),
    ids=[f'{_relative(p)}:{n}:{t}' for p, n, t in _links()])
def test_relative_link_resolves(path, line, target):
  file_part, _, anchor = target.partition('#')
  linked = (path.parent / file_part).resolve() if file_part else path
  where = f'{_relative(path)}:{line}'
  assert linked.exists(), f'{where}: {target} does not exist'
  if anchor:
    assert anchor in _anchors(linked), (
        f'{where}: {target}: no heading with anchor #{anchor} in '
        f'{linked.name} (has: {sorted(_anchors(linked))})')


def test_readme_is_short():
  lines = (ROOT / 'README.md').read_text().count('\n')
  assert lines <= MAX_README_LINES, (
      f'README.md has {lines} lines; at most {MAX_README_LINES}: move detail '
      'to docs/')


def test_readme_links_every_docs_page():
  linked = {(ROOT / t.partition('#')[0]).resolve()
            for p, _, t in _links() if p.name == 'README.md'}
  pages = {p.resolve() for p in DOCS if p.parent.name == 'docs'}
  assert pages <= linked, f'not linked from README.md: {sorted(pages - linked)}'
