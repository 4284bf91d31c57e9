"""The dict-scattering engine and its synchronized batch norm, simulated with threads on the CPU."""

import copy
import os
import threading

import pytest
import torch
from torch import nn

from mit_semseg.cli import parse_gpus
from mit_semseg.models import ModelBuilder, SegmentationModule
from mit_semseg.nn import SynchronizedBatchNorm2d, link_replicas
from mit_semseg.parallel import DictDataParallel, _shared_replica

pytestmark = pytest.mark.numeric


@pytest.mark.parametrize("sizes", [[4], [3, 3], [1, 2, 5, 3], [2, 7]])
def test_thread_replicas_equal_one_batchnorm_over_the_concatenated_batch(sizes):
    torch.manual_seed(len(sizes))
    channels = 6
    ours = SynchronizedBatchNorm2d(channels, momentum=0.1)
    ref = nn.BatchNorm2d(channels, momentum=0.1)
    with torch.no_grad():
        for bn in (ours, ref):
            bn.weight.copy_(torch.linspace(0.5, 2.0, channels))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, channels))
            bn.running_var.fill_(1.5)
    # unequal sizes per replica: batch and spatial size differ
    inputs = [torch.randn(n, channels, 5 + i, 7) * 2 + 0.5 for i, n in enumerate(sizes)]
    grads = [torch.randn_like(x) for x in inputs]
    replicas = [_shared_replica(ours) for _ in sizes]
    if len(sizes) > 1:
        link_replicas(replicas)
    xs = [x.clone().requires_grad_() for x in inputs]
    outs = [None] * len(sizes)

    def run(i):
        outs[i] = replicas[i](xs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sizes))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    torch.autograd.backward(outs, grads)

    flat = lambda ts: torch.cat([t.permute(1, 0, 2, 3).reshape(channels, -1) for t in ts], 1)
    x_ref = flat(inputs).t().reshape(-1, channels, 1, 1).clone().requires_grad_()
    y_ref = ref(x_ref)
    y_ref.backward(flat(grads).t().reshape(-1, channels, 1, 1))
    torch.testing.assert_close(
        flat(outs),
        flat([y_ref.reshape(-1, channels).t().reshape(channels, -1, 1, 1).permute(1, 0, 2, 3)]),
        atol=1e-5,
        rtol=1e-5,
    )
    torch.testing.assert_close(flat([x.grad for x in xs]), x_ref.grad.reshape(-1, channels).t(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-5, rtol=1e-5)
    assert int(ours.num_batches_tracked) == 1


def test_a_failing_replica_releases_the_others():
    bn = SynchronizedBatchNorm2d(3)
    replicas = [_shared_replica(bn) for _ in range(3)]
    group = link_replicas(replicas)
    errors = []

    def run(i):
        try:
            if i == 1:
                group.abort()
                raise RuntimeError("replica 1 failed")
            replicas[i](torch.randn(2, 3, 4, 4))
        except Exception as err:
            errors.append(type(err).__name__)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join(timeout=10) for t in threads]
    assert not any(t.is_alive() for t in threads)
    assert sorted(errors) == ["RuntimeError", "SyncAborted", "SyncAborted"]


def _segmentation_module():
    torch.manual_seed(0)
    enc = ModelBuilder.build_encoder("resnet18dilated", pretrained=False, bn_momentum=0.1)
    dec = ModelBuilder.build_decoder("c1", fc_dim=512, num_class=5, bn_momentum=0.1)
    return SegmentationModule(enc, dec, nn.NLLLoss(ignore_index=-1))


def test_engine_equals_one_model_over_the_concatenated_batch():
    """Two CPU 'devices' with batches of 2 and 1 images: the replicas' losses, parameter gradients and running
    statistics equal those of one model (plain batch norm) run on the three images together.

    In float64: a random ResNet-18 on 32 x 48 inputs normalises a handful of values per channel, so in float32
    the two (equal) computations differ by rounding amplified up to 1% on some CPUs' kernels.
    """
    torch.manual_seed(3)
    batches = [
        {"img_data": torch.randn(n, 3, 32, 48, dtype=torch.float64), "seg_label": torch.randint(-1, 5, (n, 4, 6))}
        for n in (2, 1)
    ]
    model = _segmentation_module().double().train()
    reference = copy.deepcopy(model)
    results = DictDataParallel(model, ["cpu", "cpu"])(batches)
    sum(out["loss"] for out in results).backward()

    pred = reference.decoder(reference.encoder(torch.cat([b["img_data"] for b in batches]), return_feature_maps=True))
    losses = [reference.crit(pred[:2], batches[0]["seg_label"]), reference.crit(pred[2:], batches[1]["seg_label"])]
    sum(losses).backward()
    for out, expected in zip(results, losses):
        loss = out["loss"]
        assert loss.dtype == torch.float64
        torch.testing.assert_close(loss, expected, atol=1e-10, rtol=1e-10)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-8, msg=name)
    for (name, a), b in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)
    assert all(getattr(m, "_sync", None) is None for m in model.modules())


def test_synchronized_bn_keeps_float64():
    bn = SynchronizedBatchNorm2d(3, momentum=0.1).double()
    replicas = [_shared_replica(bn) for _ in range(2)]
    link_replicas(replicas)
    x = [torch.randn(2, 3, 4, 4, dtype=torch.float64) + 1e4, torch.randn(1, 3, 4, 4, dtype=torch.float64) + 1e4]
    outs = [None, None]
    threads = [threading.Thread(target=lambda i=i: outs.__setitem__(i, replicas[i](x[i]))) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(o.dtype == torch.float64 for o in outs)
    # float32 statistics of 1e4 + N(0, 1) lose the variance to rounding; in float64 the output matches plain BN.
    expected = nn.BatchNorm2d(3).double()(torch.cat(x))
    torch.testing.assert_close(torch.cat(outs), expected, atol=1e-6, rtol=1e-6)


def test_engine_with_one_device_is_the_plain_module():
    model = _segmentation_module().train()
    batch = {"img_data": torch.randn(2, 3, 32, 32), "seg_label": torch.randint(-1, 5, (2, 4, 4))}
    torch.manual_seed(1)
    (out,) = DictDataParallel(model, ["cpu"])([batch])
    torch.testing.assert_close(out, model(batch))
    with pytest.raises(ValueError, match="got 2 batches for 1 devices"):
        DictDataParallel(model, ["cpu"])([batch, batch])


@pytest.mark.parametrize(
    "spec, expected",
    [("0-3", [0, 1, 2, 3]), ("0,2,4,6", [0, 2, 4, 6]), ("0", [0]), ("cpu", []), ("CPU", []), ("1-2,5", [1, 2, 5])],
)
def test_parse_gpus(spec, expected):
    assert parse_gpus(spec) == expected


@pytest.mark.parametrize("spec", ["a", "3-1", "0,0", "-1", "1-"])
def test_parse_gpus_rejects(spec):
    with pytest.raises(ValueError, match="--gpus"):
        parse_gpus(spec)


def test_the_requested_cpu_kernels_are_the_ones_running():
    """`make test` reruns the numeric tests under ATEN_CPU_CAPABILITY=avx2 and default: they must take effect."""
    requested = os.environ.get("ATEN_CPU_CAPABILITY")
    if requested is None:
        pytest.skip("ATEN_CPU_CAPABILITY is not set in this run")
    assert torch.backends.cpu.get_cpu_capability().lower() == requested.lower()
