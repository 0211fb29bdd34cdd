"""The throughput report runs every variant on the same draws and prints figures that agree."""

from versatune_mlops.cli import main


def test_bench_loop_reports_every_variant_side_by_side(capsys):
    assert main(["bench-loop", "--preset", "tiny", "--steps", "8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if ":" in line}
    bare = float(lines["bare torch loop"].split(":")[1].split()[0])
    loop = float(lines["versatune loop"].split(":")[1].split()[0])
    ratio = float(lines["ratio loop / bare"].split(":")[1].split()[0])
    assert bare > 0 and loop > 0
    assert abs(ratio - loop / bare) < 0.01
    table = {line[:22].strip(): line[22:].split() for line in out.splitlines()
             if line[:22].strip() in ("before", "after", "after + checkpointing", "bare torch")}
    assert set(table) == {"before", "after", "after + checkpointing", "bare torch"}
    padding = {name: float(cells[2].rstrip("%")) for name, cells in table.items()}
    assert padding["after"] < padding["before"], "length grouping should cut the padding of the same draws"
    assert padding["after"] == padding["bare torch"] == padding["after + checkpointing"]  # the same batches
    assert all(float(cells[3]) > 0 and float(cells[5]) > 0 for cells in table.values())  # memory, eval speed
    assert "GFLOP/s" in lines["matmul 2048^2"] and "model FLOPs" in out
