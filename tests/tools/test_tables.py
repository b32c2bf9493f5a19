"""The commands' tables: aligned text and markdown."""

from hyperprompt_jax import tables

COLUMNS = [tables.Column('name', 6, '<'), tables.Column('ms', 7),
           tables.Column('note', 0, '<')]


def test_text_table_aligns_headers_and_cells_in_fixed_widths():
  table = tables.text_table(COLUMNS, [['none', '1.50', 'ok'],
                                      ['global', '12.25', '-']])
  assert table.splitlines() == ['name        ms note',
                                'none      1.50 ok',
                                'global   12.25 -']


def test_text_table_widens_only_the_line_of_a_longer_cell():
  table = tables.text_table(COLUMNS, [['prompt_tuning', '1.00', 'ok'],
                                      ['none', '2.00', 'ok']])
  assert table.splitlines()[1:] == ['prompt_tuning    1.00 ok',
                                    'none      2.00 ok']


def test_text_table_without_rows_is_its_header_and_takes_a_separator():
  assert tables.text_table(COLUMNS[:2], [], sep=' | ') == 'name   |      ms'


def test_markdown_table():
  table = tables.markdown_table(['variant', 'score'],
                                [['none', '1.0 ± 0.1'], ['global', '-']])
  assert table.splitlines() == ['| variant | score |', '|---|---|',
                                '| none | 1.0 ± 0.1 |', '| global | - |']
