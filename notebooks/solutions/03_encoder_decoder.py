# Solutions to the exercises of 03_encoder_decoder.ipynb (see solutions/02_building_the_mae.py for the format).

# %% exercise-1
# 224 / 16 = 14, so 196 patches; at 75% the encoder keeps int(196 * 0.25) = 49, plus the cls token.
tokens_mae = 1 + int(196 * 0.25)
# with mask tokens the encoder sees every position: 196 + the cls token
tokens_with_mask_tokens = 1 + 196

# %% exercise-2
def decoder_flops(c, ratio):
    visible = num_kept(c.num_patches, ratio)
    T = 1 + c.num_patches  # the decoder runs on every position plus the cls token
    d = c.decoder_embed_dim
    embed = 2 * (1 + visible) * c.embed_dim * d  # decoder_embed on the encoder's outputs
    per_block = 2 * 12 * T * d**2 + 2 * 2 * T * T * d  # linear layers + attention, as in encoder_flops
    pred = 2 * T * d * c.patch_dim  # decoder_pred on all 1 + L tokens
    return embed + c.decoder_depth * per_block + pred

# %% exercise-3
# At 90% the MAE's encoder runs on 1 + 4 tokens, the [M] encoder on 1 + 49: about ten times the encoder's work,
# but the decoder (the same for both) and the patch embedding dilute it: the step is about 3-5x slower, far from
# the 10x of the token counts.
slowdown_at_90 = "1.5x to 8x"
