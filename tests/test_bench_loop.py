"""The loop-throughput benchmark command runs and reports both loops on identical work."""

from versatune_mlops.cli import main


def test_bench_loop_prints_both_loops_and_their_ratio(capsys):
    assert main(["bench-loop", "--preset", "tiny", "--steps", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if ":" in line}
    bare = float(lines["bare torch loop"].split(":")[1].split()[0])
    loop = float(lines["versatune loop"].split(":")[1].split()[0])
    ratio = float(lines["ratio loop / bare"].split(":")[1].split()[0])
    assert bare > 0 and loop > 0
    assert abs(ratio - loop / bare) < 0.01
