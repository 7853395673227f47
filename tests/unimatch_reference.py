"""An independent transcription of one iteration of the official UniMatch loop (LiheYoung/UniMatch,
`unimatch.py`, V1), for the tests: the same tensor operations in the official order, written from the
official code, not from u2pl_ray.method.unimatch. `model(x, need_fp)` is the official DeepLabV3Plus
interface: logits upsampled to the input size (bilinear, align_corners=True), a pair with need_fp."""

import torch
import torch.nn.functional as F


def official_model(net):
    def model(x, need_fp=False):
        h, w = x.shape[-2:]
        out = net(x, feature_dropout=0.5) if need_fp else net(x)
        up = lambda t: F.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)  # noqa: E731
        return (up(out["pred"]), up(out["pred_fp"])) if need_fp else up(out["pred"])

    model.eval = net.eval
    model.train = net.train
    return model


def official_iteration(
    model,
    img_x,
    mask_x,
    img_u_w,
    img_u_s1,
    img_u_s2,
    ignore_mask,
    cutmix_box1,
    cutmix_box2,
    img_u_w_mix,
    img_u_s1_mix,
    img_u_s2_mix,
    ignore_mask_mix,
    conf_thresh,
):
    criterion_l = torch.nn.CrossEntropyLoss(ignore_index=255)
    criterion_u = torch.nn.CrossEntropyLoss(reduction="none")
    img_u_s1, img_u_s2 = img_u_s1.clone(), img_u_s2.clone()

    with torch.no_grad():
        model.eval()
        pred_u_w_mix = model(img_u_w_mix).detach()
        conf_u_w_mix = pred_u_w_mix.softmax(dim=1).max(dim=1)[0]
        mask_u_w_mix = pred_u_w_mix.argmax(dim=1)

    img_u_s1[cutmix_box1.unsqueeze(1).expand(img_u_s1.shape) == 1] = img_u_s1_mix[
        cutmix_box1.unsqueeze(1).expand(img_u_s1.shape) == 1
    ]
    img_u_s2[cutmix_box2.unsqueeze(1).expand(img_u_s2.shape) == 1] = img_u_s2_mix[
        cutmix_box2.unsqueeze(1).expand(img_u_s2.shape) == 1
    ]

    model.train()
    num_lb, num_ulb = img_x.shape[0], img_u_w.shape[0]
    preds, preds_fp = model(torch.cat((img_x, img_u_w)), True)
    pred_x, pred_u_w = preds.split([num_lb, num_ulb])
    pred_u_w_fp = preds_fp[num_lb:]
    pred_u_s1, pred_u_s2 = model(torch.cat((img_u_s1, img_u_s2))).chunk(2)

    pred_u_w = pred_u_w.detach()
    conf_u_w = pred_u_w.softmax(dim=1).max(dim=1)[0]
    mask_u_w = pred_u_w.argmax(dim=1)

    mask_u_w_cutmixed1, conf_u_w_cutmixed1, ignore_mask_cutmixed1 = (
        mask_u_w.clone(),
        conf_u_w.clone(),
        ignore_mask.clone(),
    )
    mask_u_w_cutmixed2, conf_u_w_cutmixed2, ignore_mask_cutmixed2 = (
        mask_u_w.clone(),
        conf_u_w.clone(),
        ignore_mask.clone(),
    )
    mask_u_w_cutmixed1[cutmix_box1 == 1] = mask_u_w_mix[cutmix_box1 == 1]
    conf_u_w_cutmixed1[cutmix_box1 == 1] = conf_u_w_mix[cutmix_box1 == 1]
    ignore_mask_cutmixed1[cutmix_box1 == 1] = ignore_mask_mix[cutmix_box1 == 1]
    mask_u_w_cutmixed2[cutmix_box2 == 1] = mask_u_w_mix[cutmix_box2 == 1]
    conf_u_w_cutmixed2[cutmix_box2 == 1] = conf_u_w_mix[cutmix_box2 == 1]
    ignore_mask_cutmixed2[cutmix_box2 == 1] = ignore_mask_mix[cutmix_box2 == 1]

    loss_x = criterion_l(pred_x, mask_x)
    loss_u_s1 = criterion_u(pred_u_s1, mask_u_w_cutmixed1)
    loss_u_s1 = loss_u_s1 * ((conf_u_w_cutmixed1 >= conf_thresh) & (ignore_mask_cutmixed1 != 255))
    loss_u_s1 = loss_u_s1.sum() / (ignore_mask_cutmixed1 != 255).sum().item()
    loss_u_s2 = criterion_u(pred_u_s2, mask_u_w_cutmixed2)
    loss_u_s2 = loss_u_s2 * ((conf_u_w_cutmixed2 >= conf_thresh) & (ignore_mask_cutmixed2 != 255))
    loss_u_s2 = loss_u_s2.sum() / (ignore_mask_cutmixed2 != 255).sum().item()
    loss_u_w_fp = criterion_u(pred_u_w_fp, mask_u_w)
    loss_u_w_fp = loss_u_w_fp * ((conf_u_w >= conf_thresh) & (ignore_mask != 255))
    loss_u_w_fp = loss_u_w_fp.sum() / (ignore_mask != 255).sum().item()

    loss = (loss_x + loss_u_s1 * 0.25 + loss_u_s2 * 0.25 + loss_u_w_fp * 0.5) / 2.0
    mask_ratio = ((conf_u_w >= conf_thresh) & (ignore_mask != 255)).sum().item() / (ignore_mask != 255).sum()
    return loss, {
        "loss_x": loss_x,
        "loss_s": (loss_u_s1 + loss_u_s2) / 2.0,
        "loss_w_fp": loss_u_w_fp,
        "mask_ratio": mask_ratio,
    }


def poly_lr_official(base_lr, total_iters, steps):
    """The lr each of the first `steps` iterations trains with: the initial lr, then the value the loop
    set after the previous step, lr * (1 - iters / total) ** 0.9 with iters that step's index."""
    lrs, lr = [], base_lr
    for iters in range(steps):
        lrs.append(lr)
        lr = base_lr * (1 - iters / total_iters) ** 0.9
    return lrs
