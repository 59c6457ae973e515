"""A simulator of the user's own, named by its executable's path in every command: the README's
`examples/my_simulator`, built against the installed front end, taken from a prior dataset through
training to IC, from the command line and from Python."""

from __future__ import annotations

import json
import math
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import probexec
from conftest import assert_close
from probexec.errors import SimulatorDiedError
from probexec.inference.pool import remote_pool
from probexec.nn import load_checkpoint
from probexec.own_simulator import simulator_name
from probexec.simulators import SIMULATORS, SimulatorInfo, get_simulator

CLI = [sys.executable, "-m", "probexec"]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_an_executable_is_described_by_its_traces(my_simulator: Path) -> None:
    """Its name is the model name it announces; latents are its named samples, then its tags;
    observations keep their shapes. The description is what pools and drivers are handed."""
    info = get_simulator(str(my_simulator))
    assert info.name == "my_simulator"
    assert info.latents == ("energy", "sampling_fraction", "deposit")
    assert info.observed == {"reading": ()}
    assert Path(info.executable) == my_simulator.resolve()
    assert get_simulator(info) is info
    assert simulator_name(str(my_simulator)) == simulator_name(info) == "my_simulator"
    assert simulator_name("gum") == "gum"
    assert "my_simulator" not in SIMULATORS  # nothing registered behind the caller's back
    with remote_pool(info, workers=2) as pool:
        batch = probexec.inference.prior.sample_prior(pool, 100, seed=3)
    energy = batch.values_of("energy")
    assert energy.shape == (100,) and (energy > 0).all()
    assert np.allclose(batch.values_of("deposit"), energy * batch.values_of("sampling_fraction"))
    with probexec.RemoteModel(str(my_simulator)) as model:
        assert model.name == "my_simulator"


def test_own_simulator_from_prior_dataset_to_ic_on_the_command_line(
    my_simulator: Path, tmp_path: Path
) -> None:
    """`probexec prior|train|posterior ./my_simulator`: the dataset and network record the model
    name, so the network still loads for a copy of the executable elsewhere; IC over two driver
    processes agrees with importance sampling on the posterior mean of the energy."""
    data, net = tmp_path / "data", tmp_path / "net.pt"
    r = _cli("prior", str(my_simulator), "-n", "10000", "-o", str(data), "--seed", "1", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["simulator"] == "my_simulator"
    assert json.loads((data / "dataset.json").read_text())["simulator"] == "my_simulator"
    r = _cli(
        "train", str(my_simulator), "--data", str(data), "-o", str(net), "--epochs", "2",
        "--batch-size", "128", "--seed", "0", "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["simulator"] == "my_simulator"

    elsewhere = tmp_path / "installed" / "my_simulator"
    elsewhere.parent.mkdir()
    shutil.copy2(my_simulator, elsewhere)
    loaded, _ = load_checkpoint(net, simulator=str(elsewhere))  # from Python, by the path as well
    assert loaded.config.simulator == "my_simulator"
    observe = ("--observe", "reading=10")
    r = _cli(
        "posterior", str(elsewhere), "--engine", "ic", "--network", str(net), "-n", "2000",
        "--processes", "2", *observe, "--seed", "1", "-o", str(tmp_path / "ic"), "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ic = json.loads(r.stdout)
    r = _cli(
        "posterior", str(my_simulator), "--engine", "is", "-n", "100000", *observe, "--seed", "2",
        "-o", str(tmp_path / "is"), "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)
    # Trained on 20 000 traces the network's proposal is far better than the prior's (IS: ESS/N 0.07).
    assert ic["ess"] / ic["num_traces"] >= 0.3, ic
    se = math.hypot(*(p["latents"]["energy"]["std"] / math.sqrt(p["ess"]) for p in (ic, ref)))
    assert_close(ic["latents"]["energy"]["mean"], ref["latents"]["energy"]["mean"], se, "IC energy mean")
    assert_close(
        ic["latents"]["deposit"]["mean"],
        ref["latents"]["deposit"]["mean"],
        0.4 / math.sqrt(ic["ess"]),
        "IC deposit mean",
    )

    # The network is refused for a simulator of another name, as for the built-ins.
    r = _cli(
        "posterior", "gum", "--engine", "ic", "--network", str(net), "-n", "10", "-o", str(tmp_path / "x")
    )
    assert r.returncode == 1 and "trained for simulator 'my_simulator', not 'gum'" in r.stderr


def test_own_simulator_in_simulators_and_with_nothing_observed(my_simulator: Path, tmp_path: Path) -> None:
    """`probexec simulators PATH --json` shows what was read off the traces; a posterior with no
    observation says that it is the prior."""
    r = _cli("simulators", str(my_simulator), "--json")
    assert r.returncode == 0, r.stderr
    described = json.loads(r.stdout)["my_simulator"]
    assert described["latents"] == ["energy", "sampling_fraction", "deposit"]
    assert described["observed"] == {"reading": []}
    r = _cli("posterior", str(my_simulator), "-n", "50", "-o", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert "nothing is observed, so this posterior is the prior" in r.stderr and "reading" in r.stderr
    r = _cli("posterior", str(my_simulator), "-n", "50", "--observe", "readng=1", "-o", str(tmp_path / "q"))
    assert r.returncode != 0 and "no observation or latent named 'readng'" in r.stderr


def test_a_path_that_is_not_a_probexec_simulator_is_refused_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"simulator executable .*nope not found"):
        get_simulator(str(missing))
    text = tmp_path / "notes.txt"
    text.write_text("not a program")
    with pytest.raises(ValueError, match="is not an executable file"):
        get_simulator(str(text))
    script = tmp_path / "other_program"
    script.write_text("#!/bin/sh\necho 'some other program'\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(SimulatorDiedError, match=r"(?s)exited with code 3.*does not serve probexec"):
        get_simulator(str(script))
    with pytest.raises(
        KeyError, match=r"or give the path of your own simulator's executable \(with a /, e\.g\. \./mysim\)"
    ):
        get_simulator("mysim")
    r = _cli("prior", str(script), "-n", "5", "-o", str(tmp_path / "d"))
    assert r.returncode == 1 and "does not serve probexec" in r.stderr
    assert isinstance(get_simulator("gum"), SimulatorInfo)


def test_a_wrapper_script_passes_the_simulators_own_options(tmp_path: Path) -> None:
    """A simulator that needs its own options (a run card, a macro) is given as a shell script
    that execs it with them: here the tau decay with a 200 MeV noise floor per voxel, which every
    voxel's Normal then shows as its smallest stddev."""
    wrapper = tmp_path / "coarse_tau"
    tau = SIMULATORS["tau_decay"].path()
    wrapper.write_text(f'#!/bin/sh\nexec "{tau}" --fixed-spots --noise-floor 0.2 "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    info = get_simulator(str(wrapper))
    assert info.name == "tau_decay" and info.observed == {"calorimeter": (20, 35, 35)}
    with remote_pool(info, workers=1) as pool:
        batch = probexec.inference.prior.sample_prior(pool, 3, seed=1)
    ids = np.array(batch.addresses.ids_named("calorimeter"), dtype=np.uint64)
    for r in np.nonzero(np.isin(batch.address_id, ids))[0]:
        params = batch.params[batch.param_offsets[r] : batch.param_offsets[r + 1]]
        assert params[len(params) // 2 :].min() == pytest.approx(0.2)  # mean, then stddev per voxel
