# Solutions to the exercises of 08_ablations.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
def predicted_tokens(params):
    if params.get("encoder_mask_tokens"):
        return 1 + 49  # every position, as a patch or a mask token
    return 1 + max(1, int(49 * (1 - params["mask_ratio"])))  # the kept patches


my_tokens = {s.name: predicted_tokens(s.params) for s in settings}

# %% exercise-2
D = 128


def encoder_flops_by_hand(T):
    return 2 * 49 * 16 * D + 4 * (24 * T * D**2 + 2 * T * T * D + 2 * T * T * D)


my_flop_ratio = encoder_flops_by_hand(1 + 49) / encoder_flops_by_hand(1 + int(49 * 0.25))

# %% exercise-3
import math

sd, difference = 0.009, 0.01
my_seeds = next(n for n in range(2, 1000)
                if stats.t_critical(2 * n - 2) * sd * math.sqrt(2 / n) < difference)

# %% exercise-4
# The same seed gives the same initialisation, masks, batch order and augmentation, so on a CPU the same numbers
# to the last bit; another seed changes all of them. The spread between seeds is what the error bars measure.
distinct_losses = 2
