"""ResNet50 and DenseNet121 (paper III.C.2 and III.C.4): one implementation for any torchvision
classification network whose head at `fc` or `classifier` is a Linear layer, or a Sequential
ending in one (MobileNet, EfficientNet, VGG, ConvNeXt)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DistributedSampler

from pipeline.config import ConfigError
from pipeline.labels import CLASSES, POSITIVE
from pipeline.models import params
from pipeline.models.base import (
    CamTarget,
    Classifier,
    TrainContext,
    training_weights,
)
from pipeline.models.weights import pretrained_torchvision
from pipeline.train import distributed, loop
from pipeline.train.data import (
    COLOR_JITTER_KEYS,
    dataset_fingerprint,
    eval_transform,
    image_folder,
    make_loader,
    to_tensor_batch,
    train_transform,
)
from pipeline.train.device import DeviceSpec, pin_threads, resolve_device

HEAD_ATTRS = ("fc", "classifier")
# What `trainable: last` unfreezes besides the head: the last stage of each family.
LAST_STAGE = {"resnet": ("layer4",), "densenet": ("features.denseblock4", "features.norm5")}
# Grad-CAM's feature map: the last convolutional stage's output, right before global pooling,
# by the arch name's prefix.
CAM_LAYER = {
    "resnet": "layer4",
    "resnext": "layer4",
    "wide_resnet": "layer4",
    "densenet": "features",
    "mobilenet": "features",
    "efficientnet": "features",
}
WEIGHTS_FILE = "weights.pt"


def arch_family(arch: str) -> str:
    """`resnet50` -> `resnet`, `densenet121` -> `densenet`."""
    return arch.rstrip("0123456789_")


def cam_layer(arch: str) -> str | None:
    """The submodule Grad-CAM reads for `arch`, or None for a family it does not know."""
    return next((layer for prefix, layer in CAM_LAYER.items() if arch.startswith(prefix)), None)


def head_attr(network: nn.Module) -> str:
    """Name of the classification head's attribute (`fc` for ResNets, `classifier` for
    DenseNets)."""
    for attr in HEAD_ATTRS:
        if isinstance(getattr(network, attr, None), nn.Module):
            return attr
    raise ValueError(
        f"{type(network).__name__}: no head at {HEAD_ATTRS}; architecture not supported"
    )


def _new_head(in_features: int, hidden: int, dropout: float) -> nn.Sequential:
    """Dropout -> Linear(2), or with `hidden` > 0 the paper's DenseNet head
    Linear -> ReLU -> Dropout -> Linear(2)."""
    if hidden > 0:
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 2)
        )
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 2))


def build_network(config: dict[str, Any], pretrained: bool) -> nn.Module:
    """`config['arch']` with a new two-class head and `config['trainable']` applied."""
    arch = config["arch"]
    if pretrained:
        network = pretrained_torchvision(arch)
    else:
        network = torchvision.models.get_model(arch, weights=None)
    try:
        attr = head_attr(network)
    except ValueError as exc:
        raise ConfigError(f"{params.section_key(config)}.arch: {exc}") from exc
    old_head = getattr(network, attr)
    # A Sequential head (MobileNet: Linear -> Hardswish -> Dropout -> Linear) keeps its layers
    # up to its last Linear (and the Dropout before it, which the new head brings itself).
    kept: list[nn.Module] = []
    if (
        isinstance(old_head, nn.Sequential)
        and len(old_head)
        and isinstance(old_head[-1], nn.Linear)
    ):
        kept = list(old_head)[:-1]
        if kept and isinstance(kept[-1], nn.Dropout):
            kept.pop()
        old_head = old_head[-1]
    if not isinstance(old_head, nn.Linear):
        raise ConfigError(
            f"{params.section_key(config)}.arch: {arch}'s head ({attr}) is not a Linear "
            "layer nor a Sequential ending in one; supported: ResNet, DenseNet, MobileNet, "
            "EfficientNet and other networks whose head ends in one Linear layer"
        )
    new_head = _new_head(
        old_head.in_features, int(config.get("head_hidden", 0)), float(config["dropout"])
    )
    setattr(network, attr, nn.Sequential(*kept, new_head) if kept else new_head)
    trainable = config.get("trainable", "all")
    if trainable != "all":
        network.requires_grad_(False)
        getattr(network, attr).requires_grad_(True)
    if trainable == "last":
        family = arch_family(arch)
        if family not in LAST_STAGE:
            raise ConfigError(
                f"{params.section_key(config)}.trainable: last is not defined for {arch!r}; "
                "use all or head"
            )
        for name in LAST_STAGE[family]:
            network.get_submodule(name).requires_grad_(True)
    return network


def make_optimizer(
    config: dict[str, Any], parameters: Iterable[nn.Parameter]
) -> torch.optim.Optimizer:
    """`optimizer` (sgd | adam | adamw) over the parameters left trainable by `trainable`,
    with `lr`, `weight_decay` and, for sgd, `momentum`."""
    trainable = [p for p in parameters if p.requires_grad]
    lr, weight_decay = float(config["lr"]), float(config.get("weight_decay", 0.0))
    name = config["optimizer"]
    if name == "sgd":
        momentum = float(config.get("momentum", 0.0))
        return torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return optimizer_class(trainable, lr=lr, weight_decay=weight_decay)


def make_scheduler(
    config: dict[str, Any], optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """`scheduler: cosine` anneals the lr to 0 over `epochs` (stepped once per epoch); `none`
    keeps it constant, as the paper does."""
    if config.get("scheduler", "none") == "none":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(config["epochs"]))


def class_weights(targets: Sequence[int]) -> torch.Tensor:
    """Loss weight per class index, n / (k * n_c): each class weighs as much as the other in
    total, so a majority class cannot win by being called every time."""
    counts = np.bincount(np.asarray(targets), minlength=len(CLASSES)).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.as_tensor(weights, dtype=torch.float32)


def subject_sampling_weights(targets: Sequence[int], groups: Sequence[str]) -> np.ndarray:
    """Draw weights that give every training subject of a class the same share of its class
    and leave the classes' shares as they are (n_c / (subjects of c * cells of the subject)):
    the class-weighted loss still balances the classes, as without `train.subject_balance`."""
    targets = np.asarray(targets)
    weights = np.array(training_weights(targets, groups, class_balance=True), dtype=np.float64)
    for target in np.unique(targets):
        of_class = targets == target
        weights[of_class] *= of_class.sum() / weights[of_class].sum()
    return weights


def _train_rank(
    rank: int,
    world: int,
    kind: type[TorchvisionClassifier],
    config: dict[str, Any],
    ctx: TrainContext,
    device: DeviceSpec,
    on_epoch: Any = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """One DDP rank (module level, so spawned processes can import it)."""
    pin_threads(ctx.threads)
    classifier = kind(config)
    classifier.device = device
    return classifier._train(replace(ctx, on_epoch=on_epoch), rank, world)


class TorchvisionClassifier(Classifier):
    """A torchvision ImageNet CNN with a new two-class head, trained by `pipeline.train.loop`."""

    kind: ClassVar[str] = "torchvision"
    weighs_subjects = True  # by drawing training images (`subject_sampling_weights`)
    REQUIRED = ("arch", "pretrained", "epochs", "batch_size", "lr", "optimizer", "dropout")
    OPTIONAL = (
        *("name", "kind", "input_size", "color_jitter", "weight_decay", "scheduler"),
        *("momentum", "trainable", "head_hidden"),
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        params.require(self.config, self.REQUIRED)
        params.known(self.config, self.REQUIRED + self.OPTIONAL)
        if self.config["arch"] not in torchvision.models.list_models():
            raise ConfigError(
                f"{params.section_key(self.config)}.arch: {self.config['arch']!r} is not a "
                "torchvision model (see torchvision.models.list_models())"
            )
        params.choice(self.config, "pretrained", ("imagenet", "none"))
        params.choice(self.config, "optimizer", ("adam", "adamw", "sgd"))
        params.number(self.config, "dropout", 0, 1)
        self.config.setdefault("trainable", "all")
        params.choice(self.config, "trainable", ("all", "head", "last"))
        self.config.setdefault("scheduler", "none")
        params.choice(self.config, "scheduler", ("none", "cosine"))
        params.optional_int(self.config, "input_size", minimum=16)
        self._check_color_jitter()
        self.network: nn.Module | None = None
        self.device: DeviceSpec | None = None

    def _check_color_jitter(self) -> None:
        """null, or {brightness, saturation: >= 0; hue: in [0, 0.5]} (any subset)."""
        jitter = self.config.get("color_jitter")
        key = f"{params.section_key(self.config)}.color_jitter"
        if jitter is None:
            return
        if not isinstance(jitter, dict):
            raise ConfigError(f"{key}: {jitter!r} is not null or a mapping")
        for name, value in jitter.items():
            if name not in COLOR_JITTER_KEYS:
                raise ConfigError(
                    f"{key}.{name}: unknown; one of {list(COLOR_JITTER_KEYS)} (contrast would "
                    "grey the black background of a segmented cell)"
                )
            limit = 0.5 if name == "hue" else float("inf")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{key}.{name}: {value!r} is not a number")
            if not 0 <= value <= limit:
                raise ConfigError(f"{key}.{name}: {value!r} is not in [0, {limit}]")

    def _fit(self, ctx: TrainContext) -> list[dict[str, float]]:
        pin_threads(ctx.threads)
        self.image_size = self.input_side(ctx)
        self.device = resolve_device(ctx.device)
        world = distributed.world_size(ctx.strategy, ctx.processes, self.device)
        if ctx.subject_balance and world > 1:
            raise ConfigError(
                f"train.subject_balance: {world} DDP ranks shard the training images with "
                "their own sampler; subject-weighted drawing needs one process (train.strategy)"
            )
        if world == 1:
            network, history = self._train(ctx, rank=0, world=1)
        else:  # DDP: this process is rank 0 and keeps the callback; the others are spawned
            network, history = distributed.launch(
                _train_rank,
                world,
                distributed.backend_for(self.device),
                args=(type(self), self.config, replace(ctx, on_epoch=None), self.device),
                main_args=(ctx.on_epoch,),
            )
        self.network = network.eval()
        return history

    def _train(
        self, ctx: TrainContext, rank: int, world: int
    ) -> tuple[nn.Module, list[dict[str, float]]]:
        """Train on this rank (the whole batch when `world` is 1, a `1/world` shard of it
        otherwise, so the effective batch is the configured one); the network and history."""
        loop.seed_everything(ctx.seed, ctx.deterministic)  # the same initial weights everywhere
        self.image_size = self.input_side(ctx)
        device = distributed.rank_device(self.device, rank)
        network = build_network(self.config, pretrained=self.config["pretrained"] == "imagenet")
        network.to(device.device)
        model: nn.Module = network
        if world > 1:
            ids = list(device.device_ids) if device.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(network, device_ids=ids)
        jitter = self.config.get("color_jitter")
        train_set = image_folder(ctx.data_dir, "train", train_transform(self.image_size, jitter))
        val_set = image_folder(ctx.data_dir, "val", eval_transform(self.image_size))
        batch_size = max(1, int(self.config["batch_size"]) // world)
        pin = device.device.type == "cuda"
        train_sampler = val_sampler = draw_weights = None
        groups = ctx.subject_groups([path for path, _ in train_set.samples])
        if groups is not None:
            draw_weights = subject_sampling_weights(train_set.targets, groups)
        if world > 1:
            train_sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=ctx.seed)
            val_sampler = distributed.ShardSampler(len(val_set), rank, world)
        train_loader = make_loader(
            train_set, batch_size, shuffle=True, seed=ctx.seed,
            num_workers=ctx.num_workers, pin_memory=pin, sampler=train_sampler,
            weights=draw_weights,
        )  # fmt: skip
        val_loader = make_loader(
            val_set, batch_size, shuffle=False, seed=ctx.seed,
            num_workers=ctx.num_workers, pin_memory=pin, sampler=val_sampler,
        )  # fmt: skip
        run_config = {
            "model": self.config,
            "image_size": self.image_size,
            "seed": ctx.seed,
            "monitor": ctx.monitor,
            "early_stopping_patience": ctx.early_stopping_patience,
            "class_balance": ctx.class_balance,
            "data": {
                "train": dataset_fingerprint(train_set),
                "val": dataset_fingerprint(val_set),
            },
        }
        if world > 1:
            run_config["world_size"] = world  # a checkpoint resumes on as many ranks only
        if ctx.subject_balance:  # only then: earlier checkpoints keep resuming
            run_config["subject_balance"] = True
        optimizer = make_optimizer(self.config, network.parameters())
        history = loop.fit(
            model, optimizer, train_loader, val_loader, ctx, device,
            epochs=int(self.config["epochs"]), config=run_config,
            scheduler=make_scheduler(self.config, optimizer),
            criterion=nn.CrossEntropyLoss(
                weight=class_weights(train_set.targets) if ctx.class_balance else None
            ).to(device.device),
        )  # fmt: skip
        return network, history

    def _require_network(self) -> nn.Module:
        if self.network is None:
            raise RuntimeError(f"{self.config.get('name', self.kind)}: not trained or loaded")
        return self.network

    def cam_target(self) -> CamTarget | None:
        layer = cam_layer(self.config["arch"])
        if layer is None:
            return None
        network = self._require_network()
        return CamTarget(
            network=network,
            layers=[network.get_submodule(layer)],
            to_tensor=partial(to_tensor_batch, image_size=self.image_size),
            positive_index=CLASSES.index(POSITIVE),
        )

    def _image_batches(self, images: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        batch_size = int(self.config["batch_size"])
        for start in range(0, len(images), batch_size):
            yield to_tensor_batch(images[start : start + batch_size], self.image_size)

    @torch.inference_mode()
    def _infer(self, batches: Iterable[torch.Tensor], module: nn.Module) -> np.ndarray:
        """Concatenate `module` outputs over batches, run on this model's device."""
        device = (self.device or resolve_device("auto")).device
        self._require_network().eval()
        outputs = [module(batch.to(device)).float().cpu() for batch in batches]
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, 2), np.float32)

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        network = self._require_network()
        logits = torch.from_numpy(self._infer(self._image_batches(images), network))
        return torch.softmax(logits, dim=1)[:, 0].numpy().astype(np.float64)

    def _save_weights(self, directory: Path) -> None:
        torch.save(self._require_network().state_dict(), directory / WEIGHTS_FILE)

    def _load_weights(self, directory: Path) -> None:
        # The saved state replaces every weight: no need for the ImageNet file here.
        network = build_network(self.config, pretrained=False)
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        self.device = resolve_device("auto")
        self.network = network.to(self.device.device).eval()
