"""streams.app.CommitChain: commits after their batches, one at a time, merged while one is under way."""

from __future__ import annotations

import asyncio

from streams.checkpoint import CommitChain


def test_offsets_added_during_a_commit_go_out_merged_in_one_commit_after_it():
    async def run() -> list[dict[int, int]]:
        sent: list[dict[int, int]] = []
        release = asyncio.Event()

        async def commit(offsets: dict[int, int]) -> bool:
            sent.append(dict(offsets))
            await release.wait()
            return True

        chain = CommitChain(commit)
        chain.add({0: 10})
        await asyncio.sleep(0)  # the first commit is under way
        for offsets in ({0: 20, 1: 5}, {0: 30}, {2: 7}, {1: 9}):
            chain.add(offsets)
        release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        chain.add({0: 40})
        for _ in range(10):
            await asyncio.sleep(0)
        return sent

    # each partition's newest offset, in one commit after the one under way; never one a batch
    assert asyncio.run(run()) == [{0: 10}, {0: 30, 1: 9, 2: 7}, {0: 40}]
