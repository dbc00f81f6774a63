import os
import re

from gearshift.trace import new_trace_id


def test_trace_ids_are_unique_across_refills_of_the_random_bytes() -> None:
    ids = [new_trace_id() for _ in range(2000)]  # several draws of OS randomness
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert [i[:14] for i in ids] == sorted(i[:14] for i in ids)  # the time prefix: ids arrive in order


def test_a_forked_child_does_not_reuse_the_parents_random_bytes() -> None:
    new_trace_id()  # the parent holds unused random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id's random part
        os.write(write, new_trace_id()[14:].encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child and child != new_trace_id()[14:]
