"""Resume bench smoke test: resumes at two positions give the right batch."""

import json

from hyperprompt_jax.tools import resume_bench


def test_resume_bench_reports_both_positions(tmp_path, capsys):
  out = tmp_path / 'resume.json'
  resume_bench.main(['--positions=0,20', '--repeats=1', '--batch_size=2',
                     f'--output={out}'])
  report = json.loads(out.read_text())
  assert report['mixture'] == 'synthetic_mixture' and report['pack']
  first, later = report['results']
  assert (first['position'], later['position']) == (0, 20)
  assert first['advance_seconds'] < later['advance_seconds']
  assert all(r['resume_seconds'] > 0 and r['state_mib'] > 0
             for r in report['results'])
  assert 'vs first' in capsys.readouterr().out  # the printed table
