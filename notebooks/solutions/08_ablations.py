# Solutions to the exercises of 08_ablations.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
def predicted_tokens(settings):
    if settings.get("encoder_mask_tokens"):
        return 1 + 49  # every position, as a patch or a mask token
    return 1 + max(1, int(49 * (1 - settings["mask_ratio"])))  # the kept patches


my_tokens = {name: predicted_tokens(v["settings"]) for name, v in variants.items()}

# %% exercise-2
D = 128


def encoder_flops_by_hand(T):
    return 2 * 49 * 16 * D + 4 * (24 * T * D**2 + 2 * T * T * D + 2 * T * T * D)


my_flop_ratio = encoder_flops_by_hand(1 + 49) / encoder_flops_by_hand(1 + int(49 * 0.25))
