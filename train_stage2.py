"""Stage 2: re-train the classifier of a stage-1 network, MiSLAS's recipe (label-aware
smoothing, shifted BatchNorm, learnable weight scaling, class-aware sampling) or the decoupled
baselines cRT / LWS (``stage2_method``); see engine/stage2.py.

    python train_stage2.py --cfg config/cifar100/cifar100_imb001_stage2_mislas.yaml resume CKPT
    python train_stage2.py --cfg CFG --dry-run         # check the config, create nothing
    torchrun --nproc_per_node 4 train_stage2.py --cfg config/imagenet/<stage-2 yaml> resume CKPT

``resume`` names the stage-1 checkpoint (ours, or one of MiSLAS / the ARB-Loss code); a stage-2
checkpoint of ours (or ``resume auto``) continues an interrupted stage-2 run exactly. Exit
status as train_stage1.py: 0 done, 2 user error, 3 non-finite loss, 128 + N signal N.
"""
import sys

from engine.commands import train_stage2

if __name__ == "__main__":
    sys.exit(train_stage2())
