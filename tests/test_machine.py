"""The machine every timing is written beside: a CPU a reader can identify, and the precision it trains in."""
import pytest

from compression import machine


def test_a_cpu_name_without_a_model_number_gets_its_family_and_model(monkeypatch):
    # under KVM every AMD EPYC generation reads "AMD EPYC": a Zen 1 (AVX2) and a Zen 4 (AVX512-BF16)
    # train 3x apart, so their rows must not carry the same name
    monkeypatch.setattr(machine, "_cpuinfo", lambda: {"model name": "AMD EPYC", "cpu family": "23", "model": "1"})
    zen1 = machine.cpu_name()
    monkeypatch.setattr(machine, "_cpuinfo", lambda: {"model name": "AMD EPYC", "cpu family": "25", "model": "17"})
    zen4 = machine.cpu_name()
    assert zen1 == "AMD EPYC (family 23 model 1)" and zen4 == "AMD EPYC (family 25 model 17)"
    named = {"model name": "Intel(R) Xeon(R) Platinum 8480+", "cpu family": "6", "model": "143"}
    monkeypatch.setattr(machine, "_cpuinfo", lambda: named)
    assert machine.cpu_name() == named["model name"]          # a name that says its model stays as it is


def test_training_precision_follows_native_bf16_math():
    assert machine.training_precision("auto", "cpu", flags=["avx2"]) == "fp32"
    assert machine.training_precision("auto", "cpu", flags=["avx2", "avx512f", "avx512_bf16"]) == "bf16"
    assert machine.training_precision("fp32", "cpu", flags=["amx_bf16"]) == "fp32"
    assert machine.training_precision("auto", "cuda", flags=[], cuda_bf16=True) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        machine.training_precision("fp8", "cpu")
