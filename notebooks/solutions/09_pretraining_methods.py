# Solutions to the exercises of 09_pretraining_methods.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
# Query encoder: forward + backward (3 forward passes' worth) on each of two views; momentum encoder: one forward
# on each view. MAE: 3 x (encoder on a quarter of the patches + decoder), as train_flops counts it.
full = pieces["encoder, all patches"]
my_moco_vs_mae = (2 * 3 * full + 2 * full) / train_flops["MAE"]

# %% exercise-2
frozen_mae = [r for r in seg if r["method"] == "MAE" and r["frozen"]][0]
scores = {name: (iou if iou == iou else 2.0) for name, iou in zip(SCENE_CLASSES, frozen_mae["per_class_iou"])}
my_worst_class = min(scores, key=scores.get)
# Usually one of the classes that look alike from their patches (shirt, pullover, coat, T-shirt): a linear layer
# on one 4 x 4 patch's token must tell them apart from a small piece of cloth.

# %% exercise-3
# The decoder costs the same at any ratio, and at ratio 0 the encoder alone costs what supervised learning's does:
# for this model the two meet at about 15% hidden (MAE: 236 MFLOPs per image at 15%, 250 at 10%; supervised 237).
my_break_even = "below 0.25"

# %% exercise-4
my_moco_cls_knn = frozen_scores({"MoCo v3": encoders["MoCo v3"]}, bank=bank_images, test=test_images,
                                pool="cls", probe_epochs=1, pixels=False, seed=seed)[0]["knn"]
