"""dbt's stdout is drained by a thread, so dbt never waits on a full pipe while the step stores events."""
import subprocess
import sys

from assets.marts import DrainedPipe

LINES = 20_000  # ~1.2 MB: far past a pipe's 64 KB buffer
CHILD = f"import sys\nfor i in range({LINES}): sys.stdout.write(f'{{i:08d}} ' + 'x' * 50 + '\\n')\n"


def _child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_child_finishes_before_anything_is_read_and_every_line_arrives_in_order() -> None:
    child = _child()
    drained = DrainedPipe(child.stdout)
    assert child.wait(timeout=60) == 0  # undrained, it would block on the full pipe and time out
    with drained:
        lines = list(drained)
    assert drained.closed
    assert len(lines) == LINES
    assert [int(line.split()[0]) for line in lines] == list(range(LINES))


def test_an_undrained_pipe_blocks_the_child() -> None:
    """The control: the same child, read by nobody, is still running after a wait."""
    child = _child()
    try:
        child.wait(timeout=3)
        blocked = False
    except subprocess.TimeoutExpired:
        blocked = True
    finally:
        child.kill()
        child.communicate()
    assert blocked
