/* Drawing on RGB images for the --draw options of `mtl predict` and `mtl detect`: a canvas,
 * pixels, outlined and filled rectangles, and text in a small built-in 5x7 bitmap font (digits,
 * letters drawn as upper case, a little punctuation). */
#ifndef MTL_CLI_DRAW_H
#define MTL_CLI_DRAW_H

#include <stddef.h>
#include <stdint.h>

#include "cli.h"

enum { CLI_FONT_W = 5, CLI_FONT_H = 7, CLI_FONT_ADVANCE = 6 };

/* Drawings enlarge small images by a whole factor to at least this many pixels on their longer side. */
enum { CLI_DRAW_MIN_SIDE = 256 };

typedef struct cli_canvas {
    int width, height;
    uint8_t *rgb; /* height x width x 3 */
} cli_canvas;

/* Everything outside the canvas is clipped. */
void cli_put_pixel(cli_canvas *c, int x, int y, const uint8_t color[3]);
/* Text with its top-left corner at (x, y); characters the font lacks are drawn as '?'. */
void cli_draw_text(cli_canvas *c, int x, int y, const char *text, const uint8_t color[3]);
/* Pixels the text covers across: CLI_FONT_ADVANCE per character, less the last gap. */
int cli_text_width(const char *text);
/* The outline of the pixels [x0, x1] x [y0, y1], `thickness` pixels wide inwards. */
void cli_draw_rect(cli_canvas *c, int x0, int y0, int x1, int y1, int thickness, const uint8_t color[3]);
/* The pixels [x0, x1] x [y0, y1] filled. */
void cli_fill_rect(cli_canvas *c, int x0, int y0, int x1, int y1, const uint8_t color[3]);

/* Makes the --draw directory when missing; returns 0, or CLI_USAGE after printing why it cannot be
 * used. */
int cli_draw_dir(const cli_command *cmd, const char *dir);

/* DIR/NNNNN_NAME.png for image `index` of the arguments (NAME: its file name without extension). */
void cli_draw_path(const char *dir, int index, const char *image, char *buf, size_t size);

#endif
