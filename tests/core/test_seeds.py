import numpy as np
import pytest

from cosmobench.core.seeds import key_to_ints, rng, seed_sequence, torch_seed


def test_same_key_same_stream_and_different_keys_differ():
    a = rng(7, "Train", 3, "cmb").standard_normal(1000)
    assert np.array_equal(a, rng(7, "Train", 3, "cmb").standard_normal(1000))
    for other in [(8, "Train", 3, "cmb"), (7, "Valid", 3, "cmb"), (7, "Train", 4, "cmb"), (7, "Train", 3, "noise")]:
        b = rng(*other).standard_normal(1000)
        # independent unit Gaussians: the sample correlation is ~N(0, 1/sqrt(1000))
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(1000)


def test_string_keys_are_stable_crc32():
    # CRC-32 of "Train" is fixed forever: the stream of a simulation never depends on the Python version
    assert key_to_ints(("Train", 5)) == (0x9DA7CBA7, 5)
    assert seed_sequence(1, "Train").spawn_key == (0x9DA7CBA7,)


def test_stream_does_not_depend_on_draw_order():
    first = [rng(0, "Train", i).integers(1 << 30) for i in range(5)]
    reverse = [rng(0, "Train", i).integers(1 << 30) for i in reversed(range(5))][::-1]
    assert first == reverse


@pytest.mark.parametrize("bad", [-1, 1.5, None, True])
def test_bad_key_parts_raise(bad):
    with pytest.raises((TypeError, ValueError)):
        key_to_ints(("Train", bad))


def test_torch_seed_is_a_63_bit_int():
    s = torch_seed(3, "epoch", 2)
    assert 0 <= s < 2**63 and s == torch_seed(3, "epoch", 2) and s != torch_seed(3, "epoch", 3)
