"""The tables that commands print: aligned text and markdown.

Cells come formatted by the caller (units and digits are the table's
business); this module only lays them out.
"""

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of an aligned text table.

  Attributes:
    header: its title.
    width: its width in characters. Widths are fixed rather than taken from
      the cells, so that a command can print each row as soon as it is
      measured; a longer cell widens its own line only.
    align: '>' (numbers) or '<' (names).
  """
  header: str
  width: int
  align: str = '>'


def text_table(columns: Sequence[Column], rows: Sequence[Sequence[str]],
               sep: str = ' ') -> str:
  """The header line, then one line per row; cells joined by `sep`."""
  return '\n'.join(
      sep.join(f'{cell:{column.align}{column.width}}'
               for column, cell in zip(columns, line))
      for line in [[c.header for c in columns], *rows])


def markdown_table(headers: Sequence[str],
                   rows: Sequence[Sequence[str]]) -> str:
  """A markdown table: the header row, its rule, then one line per row."""
  def line(cells: Sequence[str]) -> str:
    return '| ' + ' | '.join(cells) + ' |'
  return '\n'.join([line(headers), '|' + '---|' * len(headers),
                    *map(line, rows)])
