import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from cmi_cli.errors import DataError
from cmi_cli.training.metrics import (
    SegmentationMetric,
    compute_metrics,
    update_confusion,
    update_confusion_np,
)

# A 3-class worked example, rows = ground truth, columns = prediction:
#            pred0 pred1 pred2 | gt pixels
#   gt0        3     1     0   |  4
#   gt1        2     2     0   |  4
#   gt2        0     1     3   |  4
#   predicted  5     4     3   | 12
# IoU = tp / (gt + pred - tp): 3/(4+5-3)=0.5, 2/(4+4-2)=1/3, 3/(4+3-3)=0.75
# mIoU = (0.5 + 1/3 + 0.75) / 3 = 19/36; pixel accuracy = (3+2+3)/12 = 2/3
# class accuracy (recall) = 3/4, 2/4, 3/4 -> mean 2/3
TARGET = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
PRED = [0, 0, 0, 1, 0, 0, 1, 1, 1, 2, 2, 2]
EXPECTED_CONF = [[3, 1, 0], [2, 2, 0], [0, 1, 3]]


def worked_example(num_classes=3):
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    target = torch.tensor(TARGET).reshape(1, 3, 4)
    pred = torch.tensor(PRED).reshape(1, 3, 4)
    return update_confusion(conf, pred, target, num_classes)


def test_worked_example_by_hand():
    conf = worked_example()
    assert conf.tolist() == EXPECTED_CONF
    scores = compute_metrics(conf, ["rice", "egg", "tomato"])
    assert scores.per_class_iou == pytest.approx([0.5, 1 / 3, 0.75])
    assert scores.miou == pytest.approx(19 / 36)
    assert scores.pixel_accuracy == pytest.approx(2 / 3)
    assert scores.per_class_accuracy == pytest.approx([0.75, 0.5, 0.75])
    assert scores.mean_class_accuracy == pytest.approx(2 / 3)
    assert scores.num_pixels == 12
    best, worst = scores.best_and_worst(k=2)
    assert best == [("tomato", pytest.approx(0.75)), ("rice", pytest.approx(0.5))]
    assert worst == [("egg", pytest.approx(1 / 3)), ("rice", pytest.approx(0.5))]


def test_perfect_prediction():
    target = torch.randint(0, 5, (2, 8, 8))
    conf = update_confusion(torch.zeros(5, 5, dtype=torch.int64), target, target, 5)
    scores = compute_metrics(conf)
    assert scores.miou == 1.0
    assert scores.pixel_accuracy == 1.0
    assert scores.mean_class_accuracy == 1.0
    assert scores.class_names == [f"class_{i}" for i in range(5)]


def test_absent_class_is_nan_and_left_out_of_the_mean():
    scores = compute_metrics(worked_example(num_classes=4))
    assert math.isnan(scores.per_class_iou[3])
    assert math.isnan(scores.per_class_accuracy[3])
    assert scores.miou == pytest.approx(19 / 36)
    assert scores.mean_class_accuracy == pytest.approx(2 / 3)
    assert scores.to_dict()["per_class_iou"][3] is None


def test_class_only_in_prediction_counts_with_iou_zero():
    # gt: 0 0 1 1; pred: 0 2 1 1 -> class 2 never in gt but predicted once (union 1, IoU 0)
    conf = update_confusion(
        torch.zeros(3, 3, dtype=torch.int64),
        torch.tensor([[[0, 2, 1, 1]]]),
        torch.tensor([[[0, 0, 1, 1]]]),
        3,
    )
    scores = compute_metrics(conf)
    # IoU: class0 1/(2+1-1)=0.5, class1 2/2=1, class2 0/1=0
    assert scores.per_class_iou == pytest.approx([0.5, 1.0, 0.0])
    assert scores.miou == pytest.approx(0.5)
    # accuracy only over classes in the ground truth: (1/2 + 1) / 2
    assert math.isnan(scores.per_class_accuracy[2])
    assert scores.mean_class_accuracy == pytest.approx(0.75)


def test_ignored_pixels_do_not_count():
    target = torch.tensor([*TARGET, 255, 255, 255, 255]).reshape(1, 4, 4)
    pred = torch.tensor([*PRED, 2, 0, 1, 2]).reshape(1, 4, 4)
    conf = update_confusion(torch.zeros(3, 3, dtype=torch.int64), pred, target, 3)
    assert conf.tolist() == EXPECTED_CONF
    scores = compute_metrics(conf)
    assert scores.num_pixels == 12
    assert scores.miou == pytest.approx(19 / 36)


def test_other_ignore_index():
    target = torch.tensor([[[0, 1, 9]]])
    pred = torch.tensor([[[0, 0, 1]]])
    conf = update_confusion(torch.zeros(2, 2, dtype=torch.int64), pred, target, 2, ignore_index=9)
    assert conf.tolist() == [[1, 0], [1, 0]]


def test_two_batches_accumulate_like_one():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (4, 9, 7), generator=gen)
    target[target == 5] = 255
    pred = torch.randint(0, 5, (4, 9, 7), generator=gen)
    whole = update_confusion(torch.zeros(5, 5, dtype=torch.int64), pred, target, 5)
    parts = torch.zeros(5, 5, dtype=torch.int64)
    update_confusion(parts, pred[:1], target[:1], 5)
    update_confusion(parts, pred[1:], target[1:], 5)
    assert torch.equal(parts, whole)
    assert int(whole.sum()) == int((target != 255).sum())


def test_numpy_twin_matches_torch():
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (2, 5, 6), generator=gen)
    target[0, 0] = 255
    pred = torch.randint(0, 4, (2, 5, 6), generator=gen)
    expected = update_confusion(torch.zeros(4, 4, dtype=torch.int64), pred, target, 4)
    got = update_confusion_np(np.zeros((4, 4), np.int64), pred.numpy(), target.numpy(), 4)
    assert got.tolist() == expected.tolist()
    assert got.dtype == np.int64


def test_int64_counts_do_not_overflow():
    big = 2**40
    conf = torch.tensor([[big, 0], [0, big]], dtype=torch.int64)
    update_confusion(conf, torch.zeros(1, 2, 2, dtype=torch.uint8), torch.ones(1, 2, 2), 2)
    assert conf.tolist() == [[big, 0], [4, big]]
    scores = compute_metrics(conf)
    assert scores.num_pixels == 2 * big + 4
    assert scores.per_class_iou[0] == pytest.approx(big / (big + 4))
    conf = np.full((2, 2), 2**31 + 5, dtype=np.int64)
    update_confusion_np(conf, np.zeros((1, 3), np.uint8), np.zeros((1, 3), np.uint8), 2)
    assert conf[0, 0] == 2**31 + 8


def test_empty_matrix_gives_nan_and_json_nulls():
    scores = compute_metrics(np.zeros((3, 3), dtype=np.int64))
    assert math.isnan(scores.miou)
    data = scores.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["miou"] is None
    assert data["pixel_accuracy"] is None
    assert scores.best_and_worst() == ([], [])


def test_to_dict_is_json_safe():
    data = compute_metrics(worked_example(4), ["a", "b", "c", "d"]).to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["miou"] == pytest.approx(19 / 36)
    assert data["class_names"] == ["a", "b", "c", "d"]


def test_bad_inputs_raise_data_errors():
    conf = torch.zeros(3, 3, dtype=torch.int64)
    with pytest.raises(DataError, match="Mask label 7"):
        update_confusion(conf, torch.zeros(1, 2, 2), torch.full((1, 2, 2), 7), 3)
    with pytest.raises(DataError, match="Predicted class 3"):
        update_confusion(conf, torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2), 3)
    with pytest.raises(DataError, match="shape"):
        update_confusion(conf, torch.zeros(1, 2, 3), torch.zeros(1, 2, 2), 3)
    assert int(conf.sum()) == 0
    with pytest.raises(DataError, match="2 class names"):
        compute_metrics(conf, ["a", "b"])
    with pytest.raises(DataError, match="square"):
        compute_metrics(np.zeros((2, 3)))


def test_segmentation_metric_accepts_logits_and_ids_and_resets():
    metric = SegmentationMetric(num_classes=3, class_names=["rice", "egg", "tomato"])
    target = torch.tensor(TARGET).reshape(1, 3, 4)
    pred = torch.tensor(PRED).reshape(1, 3, 4)
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    metric.update(logits[:, :, :2], target[:, :2])
    metric.update(pred[:, 2:], target[:, 2:])
    assert metric.compute().tolist() == EXPECTED_CONF
    scores = metric.scores()
    assert scores.miou == pytest.approx(19 / 36)
    assert scores.class_names == ["rice", "egg", "tomato"]
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert int(metric.compute().sum()) == 0


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from cmi_cli.training.metrics import SegmentationMetric

    def work(rank, port, out):
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=2)
        metric = SegmentationMetric(num_classes=3)
        # rank 0 sees one class-0 pixel predicted 0, rank 1 two class-2 pixels predicted 1
        if rank == 0:
            metric.update(torch.tensor([[[0]]]), torch.tensor([[[0]]]))
        else:
            metric.update(torch.tensor([[[1, 1]]]), torch.tensor([[[2, 2]]]))
        conf = metric.compute()
        if rank == 0:
            with open(out, "w") as f:
                f.write(repr(conf.tolist()))
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(work, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
    """
)


@pytest.mark.slow
def test_segmentation_metric_sums_over_ddp_ranks(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "ddp_metric.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "conf.txt"
    subprocess.run([sys.executable, str(script), str(port), str(out)], check=True, timeout=120)
    assert out.read_text() == repr([[1, 0, 0], [0, 0, 0], [0, 2, 0]])
