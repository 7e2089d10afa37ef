import click
import pytest

from ctloop.clirunner import run_command
from ctloop.errors import CtloopError


def _command(exc: Exception) -> click.Command:
    @click.command()
    def boom() -> None:
        raise exc

    return boom


@pytest.mark.parametrize(
    ("exc", "code", "traceback"),
    [
        (CtloopError("MLflow at http://ops:hunter2@127.0.0.1:5000 refused"), 2, False),
        (RuntimeError("driver said: mysql+pymysql://root:hunter2@db/fs is gone"), 1, True),
    ],
)
def test_errors_end_the_command_without_the_password(
    exc: Exception, code: int, traceback: bool, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr("sys.argv", ["ctloop"])
    with pytest.raises(SystemExit) as info:
        run_command(_command(exc))
    assert info.value.code == code
    err = capsys.readouterr().err
    assert "hunter2" not in err and "***@" in err
    assert ("Traceback" in err) is traceback
