"""The command line: listing simulators, serving one for a remote engine, the demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import probexec

CLI = [sys.executable, "-m", "probexec"]


def test_simulators_lists_names_latents_and_observations():
    out = subprocess.run(
        [*CLI, "simulators", "--json"], capture_output=True, text=True, check=True, timeout=60
    )
    sims = json.loads(out.stdout)
    assert {"gum", "gum_marsaglia", "hmm", "branching"} <= set(sims)
    assert sims["gum"]["latents"] == ["mu"] and sims["gum"]["observed"] == {"obs": [2]}
    assert sims["hmm"]["latents"] == [f"state_{t}" for t in range(17)]
    assert sims["branching"]["latents"] == ["r"]
    text = subprocess.run([*CLI, "simulators"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "gum_marsaglia" in text and "latents: mu" in text


def test_output_into_a_closed_pipe_ends_quietly():
    """`probexec simulators | head -1`: the reader leaves before the output ends. That is no
    error of ours to print a traceback for."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    try:
        proc = subprocess.run(
            [*CLI, "simulators", "--all"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def test_serve_runs_a_simulator_for_a_remote_engine(tmp_path):
    address = f"ipc://{tmp_path}/served.sock"
    proc = subprocess.Popen([*CLI, "serve", "branching", "--address", address, "--quiet"])
    try:
        with probexec.RemoteModel(address=address, timeout=20) as model:
            assert model.model_name == "branching" and model.supports_streaming
            batch = model.prior(500, seed=0)
            assert batch.num_traces == 500 and set(batch.addresses.names()) >= {"r", "obs"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_serve_idle_timeout_ends_a_server_whose_engine_left(tmp_path):
    """A server started by hand (a Slurm job step) frees its core once no engine has asked for a
    trace for --idle-timeout seconds; while an engine works, it stays."""
    address = f"ipc://{tmp_path}/idle.sock"
    proc = subprocess.Popen(
        [*CLI, "serve", "gum", "--address", address, "--idle-timeout", "2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with probexec.RemoteModel(address=address, timeout=20) as model:
            for _ in range(3):  # 3 s of work in all, with pauses shorter than the limit
                assert model.prior(10, seed=0).num_traces == 10
                time.sleep(1.0)
            assert proc.poll() is None
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "no request for 2 s (--idle-timeout); exiting" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_unknown_simulator_is_a_clear_error():
    r = subprocess.run(
        [*CLI, "serve", "nope", "--address", "ipc:///tmp/x"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "unknown simulator 'nope'" in r.stderr


def test_demo_runs_end_to_end():
    t0 = time.monotonic()
    r = subprocess.run(
        [*CLI, "demo", "--model", "gum", "--per-draw-traces", "200", "--stream-traces", "20000"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert r.returncode == 0, r.stderr
    assert "posterior mu mean" in r.stdout and "streaming" in r.stdout
    assert time.monotonic() - t0 < 60


def test_tau_demo_infers_an_event_and_says_what_it_got():
    r = subprocess.run(
        [*CLI, "demo", "--traces", "60", "--workers", "2"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert "the observation: one simulated event" in r.stdout
    assert "channel posterior" in r.stdout and "ESS" in r.stdout and "(truth" in r.stdout
    # 60 prior traces of the 5 MeV calorimeter: one trace takes the weight, and the demo says why.
    assert "floor 0.005 GeV" in r.stdout
    assert "not a posterior" in r.stdout and "random" in r.stdout


def test_coarse_tau_demo_gives_a_posterior_of_many_traces():
    """At a 200 MeV resolution the prior's weights spread over many traces: the demo runs the
    variant named, reports its noise floor, and its ESS is well above one trace."""
    r = subprocess.run(
        [*CLI, "demo", "--model", "tau_decay_coarse", "--traces", "400", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "C++ simulator 'tau_decay_coarse'" in r.stdout and "floor 0.2 GeV" in r.stdout
    ess = float(re.search(r"ESS ([0-9.]+) \(ESS/N", r.stdout).group(1))
    assert ess > 3, r.stdout
    assert "not a posterior" not in r.stdout


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_tau_demo_with_a_network_runs_ic_on_the_same_event_and_refuses_another_simulators(tmp_path):
    """`--network`: IC infers the demo's event with as many traces as importance sampling (here
    with a defensive share of prior traces), and the two ESS are printed side by side; with `--adapt`,
    IC from a copy adapted to the event (mixed with the trained network) runs too, and its ESS and
    evidence join them. A network trained for another simulator is refused before any simulator
    starts, naming both, and so are settings that cannot run."""
    data, net = tmp_path / "tau", tmp_path / "tau.pt"
    for args in (
        ("prior", "tau_decay_coarse", "-n", "64", "-o", str(data), "--workers", "2", "--quiet"),
        ("train", "tau_decay_coarse", "--data", str(data), "-o", str(net), "--traces", "128",
         "--batch-size", "32", "--quiet"),
    ):  # fmt: skip
        r = _cli(*args)
        assert r.returncode == 0, r.stderr
    r = _cli(
        "demo", "--model", "tau_decay_coarse", "--traces", "80", "--workers", "2", "--network", str(net),
        "--defensive", "0.25", "--adapt", "1", "--adapt-traces", "40", "--adapt-steps", "5", "--adapt-mix", "0.2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "inference compilation with" in r.stdout and "0.25 of them from the prior" in r.stdout
    assert (
        "adapted to the event first (1 round of 40 traces, 0.2 of them from the trained network)" in r.stdout
    )
    for label in ("IC", "adapted IC"):
        side = re.search(
            rf"at 80 traces each: ESS ([0-9.]+) with {label} against ([0-9.]+) with the prior", r.stdout
        )
        assert side is not None, r.stdout
        assert float(side.group(1)) >= 1 and float(side.group(2)) >= 1
        assert re.search(rf"log p\(y\) estimated: [0-9.-]+ by {label}, [0-9.-]+ by the prior", r.stdout), (
            r.stdout
        )
    assert r.stdout.count("channel posterior") == 3

    gum_data, gum_net = tmp_path / "gum", tmp_path / "gum.pt"
    assert _cli("prior", "gum", "-n", "200", "-o", str(gum_data), "--quiet").returncode == 0
    r = _cli("train", "gum", "--data", str(gum_data), "-o", str(gum_net), "--traces", "200", "--quiet")
    assert r.returncode == 0, r.stderr
    r = _cli("demo", "--model", "tau_decay_coarse", "--traces", "80", "--network", str(gum_net))
    assert r.returncode == 1
    assert "gum" in r.stderr and "tau_decay_coarse" in r.stderr
    assert "the observation" not in r.stdout
    r = _cli("demo", "--model", "gum", "--network", str(gum_net))
    assert r.returncode == 1 and "--model tau_decay" in r.stderr
    r = _cli("demo", "--model", "tau_decay_coarse", "--defensive", "0.2")
    assert r.returncode == 1 and "give --network" in r.stderr
    r = _cli("demo", "--model", "tau_decay_coarse", "--adapt", "2")
    assert r.returncode == 1 and "give --network" in r.stderr
    r = _cli(
        "demo", "--model", "tau_decay_coarse", "--network", str(net), "--defensive", "0.5", "--adapt", "2",
        "--adapt-mix", "0.6",
    )  # fmt: skip
    assert r.returncode == 1 and "--adapt-mix" in r.stderr and "the observation" not in r.stdout
