"""A small bank folder written directly (no extraction), for tests of what reads banks."""

from __future__ import annotations

import numpy as np

from acar_deploy.formats.bank import BankManifest, BankVideo, video_dir, write_video_arrays

TIMESTAMPS = [0, 0, 1, 2, 2, 2, 4, 5]  # 2 boxes at second 0, 1 at 1, 3 at 2, none at 3, 1 at 4 and 5


def write_bank(folder, shape, videos=("v",)):
    """A bank folder as `bank extract` commits it: fp16 entries, an index of (timestamp, box) per entry."""
    rng = np.random.default_rng(0)
    committed = []
    for video in videos:
        n = len(TIMESTAMPS)
        video_dir(folder, video).mkdir(parents=True)
        boxes = np.tile([0.1, 0.2, 0.5, 0.9], (n, 1)) + rng.uniform(0, 0.05, (n, 4))
        write_video_arrays(video_dir(folder, video), rng.standard_normal((n, *shape)).astype(np.float16),
                           np.array(TIMESTAMPS, np.int32), boxes.astype(np.float32))
        committed.append(BankVideo(video, n, 0, 5, "-", "-"))
        committed[-1].write(video_dir(folder, video) / "video.json")
    BankManifest("fp16", tuple(shape), "val", "test boxes", {}, videos=tuple(committed)).write(folder)
    return folder
