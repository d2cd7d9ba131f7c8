/* Image files into a deploy net for `mtl predict` and `mtl detect` (see image_input.h): the pixel
 * transform options, the input blob, the weights and the decoding of one image. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/snapshot.h"
#include "data/image.h"
#include "image_input.h"

int cli_parse_float(const cli_command *cmd, const char *option, const char *text, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno == ERANGE || !isfinite(v))
        return cli_usage_error(cmd, "--%s needs a number, not '%s'", option, text);
    *out = (float)v;
    return 0;
}

static int parse_mean(const cli_command *cmd, const char *text, cli_pixels *px)
{
    char buf[256];
    if (strlen(text) >= sizeof(buf))
        return cli_usage_error(cmd, "--mean '%s' is too long", text);
    strcpy(buf, text);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (px->n_mean == 3)
            return cli_usage_error(cmd, "--mean takes one value or one per channel (at most 3): '%s'", text);
        int rc = cli_parse_float(cmd, "mean", tok, &px->mean[px->n_mean++]);
        if (rc)
            return rc;
    }
    if (px->n_mean == 0)
        return cli_usage_error(cmd, "--mean needs a number, not '%s'", text);
    return 0;
}

int cli_pixels_parse(const cli_command *cmd, const cli_option *options, int n_options, cli_pixels *px)
{
    const char *text;
    int rc;
    if ((text = cli_value(options, n_options, "scale")) && (rc = cli_parse_float(cmd, "scale", text, &px->scale)))
        return rc;
    if ((text = cli_value(options, n_options, "mean")) && (rc = parse_mean(cmd, text, px)))
        return rc;
    px->force_gray = cli_value(options, n_options, "gray") != NULL;
    px->force_color = cli_value(options, n_options, "color") != NULL;
    if (px->force_gray && px->force_color)
        return cli_usage_error(cmd, "give --gray or --color, not both");
    return 0;
}

int cli_pixels_check(const cli_command *cmd, const cli_pixels *px, const mtl_tensor *input)
{
    const int channels = input->shape[1];
    if (px->force_color && channels != 3)
        return cli_usage_error(cmd, "--color, but input blob '%s' has %d channel(s)", input->name, channels);
    if (px->n_mean > 1 && px->n_mean != channels)
        return cli_usage_error(cmd, "--mean gives %d values, input blob '%s' has %d channels", px->n_mean,
                               input->name, channels);
    return 0;
}

mtl_status cli_load_weights(mtl_net *net, const char *path, mtl_error *err)
{
    mtl_snapshot *snap = NULL;
    MTL_TRY(mtl_snapshot_read(path, &snap, err));
    char *report = NULL;
    size_t report_size = 0;
    FILE *rf = open_memstream(&report, &report_size);
    mtl_snapshot_match match = {0};
    mtl_status st = mtl_snapshot_load_weights(snap, net, rf, &match, err);
    if (rf)
        fclose(rf);
    mtl_snapshot_free(snap);
    if (st == MTL_OK && (match.missing || match.mismatched)) {
        /* the report's own lines name each parameter that does not fit */
        for (char *line = report, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            if (strncmp(line, "  missing", 9) == 0 || strncmp(line, "  mismatch", 10) == 0)
                fprintf(stderr, "%s\n", line);
        }
        st = mtl_fail(err, MTL_ERR_SHAPE,
                      "weights '%s' do not fit net '%s': %d parameters missing from the file, %d with another "
                      "shape (listed above); the deploy net's layers must keep the trained net's names and sizes",
                      path, net->name ? net->name : "", match.missing, match.mismatched);
    }
    free(report);
    return st;
}

mtl_status cli_find_image_input(const mtl_net *net, const char *model, const char *command, mtl_tensor **out,
                                mtl_error *err)
{
    if (net->n_inputs == 0)
        return mtl_fail(err, MTL_ERR_CONFIG,
                        "net '%s' has no input blob: %s needs a deploy net with an Input layer (or input: and "
                        "input_shape), not a net that reads a database",
                        model, command);
    mtl_tensor *t = net->blobs[net->input_blobs[0]];
    for (int k = 0; k < net->n_inputs; k++)
        if (strcmp(net->blobs[net->input_blobs[k]]->name, "data") == 0)
            t = net->blobs[net->input_blobs[k]];
    char shape[128];
    if (t->ndim != 4 || (t->shape[1] != 1 && t->shape[1] != 3) || t->shape[2] <= 0 || t->shape[3] <= 0)
        return mtl_fail(err, MTL_ERR_SHAPE,
                        "input blob '%s' of net '%s' has shape %s: %s needs N x C x H x W with C 1 (grey) or 3 "
                        "(RGB)",
                        t->name, model, mtl_tensor_shape_str(t, shape, sizeof(shape)), command);
    *out = t;
    return MTL_OK;
}

mtl_status cli_load_image(const char *path, const cli_pixels *px, int channels, int height, int width,
                          float *x /* channels x height x width */, int *file_width, int *file_height, mtl_error *err)
{
    /* --gray decodes grey whatever the net's channels; the grey plane then fills each channel */
    int decode = px->force_gray ? 1 : channels;
    mtl_image img = {0};
    MTL_TRY(mtl_image_load(path, decode, &img, err));
    if (file_width)
        *file_width = img.width;
    if (file_height)
        *file_height = img.height;
    if (img.width != width || img.height != height) {
        mtl_image resized = {0};
        mtl_status st = mtl_image_resize(&img, width, height, &resized, err);
        mtl_image_free(&img);
        if (st != MTL_OK)
            return mtl_error_prefix(err, "resizing '%s' to %dx%d: ", path, width, height);
        img = resized;
    }
    const int ic = img.channels;
    for (int c = 0; c < channels; c++) {
        float mean = px->n_mean == 0 ? 0.0f : px->mean[px->n_mean == 1 ? 0 : c];
        const uint8_t *src = img.pixels + (ic == 1 ? 0 : c);
        float *dst = x + (size_t)c * (size_t)height * (size_t)width;
        for (size_t i = 0, n = (size_t)height * (size_t)width; i < n; i++)
            dst[i] = ((float)src[i * (size_t)ic] - mean) * px->scale;
    }
    mtl_image_free(&img);
    return MTL_OK;
}
