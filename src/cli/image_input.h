/* Feeding image files to a deploy net, shared by `mtl predict` and `mtl detect`: the pixel
 * transform options (--scale, --mean, --gray, --color), finding the net's image input blob,
 * loading every parameter from a snapshot, and decoding one image into the input blob. */
#ifndef MTL_CLI_IMAGE_INPUT_H
#define MTL_CLI_IMAGE_INPUT_H

#include "cli.h"
#include "core/net.h"

/* How pixels become input values: (pixel - mean) * scale, Caffe's transform_param order. */
typedef struct cli_pixels {
    float scale;      /* default 1 */
    int n_mean;       /* 0 (no mean), 1 (every channel) or one per channel */
    float mean[3];
    int force_gray;   /* decode grey whatever the net's channels (repeated over them) */
    int force_color;  /* decode RGB (the input must have 3 channels) */
} cli_pixels;

#define CLI_PIXELS_DEFAULT ((cli_pixels){.scale = 1.0f})

/* Reads --scale, --mean, --gray and --color from parsed options (all four must be in `options`);
 * returns 0 or CLI_USAGE after printing the problem. */
int cli_pixels_parse(const cli_command *cmd, const cli_option *options, int n_options, cli_pixels *px);
/* The transform fits an input of `channels` channels (--color needs 3, --mean one value or one per
 * channel); returns 0 or CLI_USAGE after printing the problem. */
int cli_pixels_check(const cli_command *cmd, const cli_pixels *px, const mtl_tensor *input);
/* A finite number for option --name; returns 0 or CLI_USAGE after printing the problem. */
int cli_parse_float(const cli_command *cmd, const char *option, const char *text, float *out);

/* The blob the images go into: 'data', else the first input blob; N x C x H x W with C 1 or 3.
 * `command` names the tool in the error ("predict needs a deploy net ..."). */
mtl_status cli_find_image_input(const mtl_net *net, const char *model, const char *command, mtl_tensor **out,
                                mtl_error *err);

/* The net's parameters from a snapshot, all of them: a deploy net with some layers left at their
 * initial values would give confident nonsense, so anything missing or of another shape is an
 * error (each one listed on stderr). */
mtl_status cli_load_weights(mtl_net *net, const char *path, mtl_error *err);

/* Decodes one image file into x (channels x height x width): resized when its size differs,
 * (pixel - mean) * scale. The file's own size goes to *file_width / *file_height (either may be
 * NULL). */
mtl_status cli_load_image(const char *path, const cli_pixels *px, int channels, int height, int width,
                          float *x /* channels x height x width */, int *file_width, int *file_height, mtl_error *err);

#endif
