import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher import queueid


def test_short_id_is_hex_usec_then_hex_inode():
    assert queueid.short_id(0xF1135, 0x20C9E1) == "F113520C9E1"
    assert queueid.inode_of("F113520C9E1") == 0x20C9E1


def test_long_id_layout():
    qid = queueid.long_id(1_700_000_000, 123456, 2148833)
    sep = qid.rfind("z")
    assert sep >= 10 and "z" not in qid[sep + 1:]
    assert queueid.is_long(qid) and queueid.is_valid(qid)
    assert queueid.inode_of(qid) == 2148833


@given(st.integers(0, 2**40), st.integers(0, 999_999), st.integers(1, 2**63 - 1))
def test_ids_decode_to_their_inode(sec, usec, inode):
    assert queueid.inode_of(queueid.short_id(usec, inode)) == inode
    assert queueid.inode_of(queueid.long_id(sec, usec, inode)) == inode


@pytest.mark.parametrize("bad", ["", "abc", "../etc", "F11352 0C9E1", "12345", "f113520c9e1",
                                 "4Rk2Lb3dV8zaeiou"])
def test_rejects_what_is_not_an_id(bad):
    assert not queueid.is_valid(bad)
    with pytest.raises(queueid.QueueIdError):
        queueid.inode_of(bad)


def test_hashed_path_uses_leading_characters():
    p = queueid.queue_path("/q", "incoming", "F113520C9E1", {"incoming"}, 2)
    assert str(p) == "/q/incoming/F/1/F113520C9E1"
    flat = queueid.queue_path("/q", "hold", "F113520C9E1", {"incoming"}, 2)
    assert str(flat) == "/q/hold/F113520C9E1"


def test_long_id_hashes_on_hex_microseconds():
    qid = queueid.long_id(1_700_000_000, 0xABCDE, 77)
    assert queueid.hash_key(qid) == "ABCDE"
    assert str(queueid.queue_path("/q", "deferred", qid, {"deferred"}, 1)) == f"/q/deferred/A/{qid}"
