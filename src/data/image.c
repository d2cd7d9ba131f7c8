/* Image decoding, resizing and PNG encoding over Debian's libstb (the stb implementations live in
 * libstb.so, so this file only includes the declarations). Files are read here rather than by stb so
 * errors can say why a file could not be opened; stb then decodes from memory. */
#include "data/image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stb/stb_image_write.h>

/* Reads a whole regular file into a malloc'd buffer. */
static mtl_status read_file(const char *path, uint8_t **bytes, size_t *size, mtl_error *err)
{
    *bytes = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mtl_fail(err, errno == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO, "cannot open image '%s': %s", path,
                        strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return mtl_fail(err, MTL_ERR_IO, "cannot read image '%s': not a regular file", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)INT_MAX) {
        fclose(f);
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "image '%s' is %lld bytes; images above 2 GiB are not supported",
                        path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading image '%s' (%zu bytes)", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || got != n) {
        free(buf);
        return mtl_fail(err, MTL_ERR_IO, "cannot read image '%s': %s", path,
                        failed ? strerror(errno) : "the file shrank while being read");
    }
    *bytes = buf;
    *size = n;
    return MTL_OK;
}

/* The channel count decoding with channels 0 gives: grey (with or without alpha) stays 1, anything
 * else is RGB. Alpha is dropped: records hold grey or RGB planes only. */
static int natural_channels(int file_channels) { return file_channels <= 2 ? 1 : 3; }

mtl_status mtl_image_decode(const uint8_t *bytes, size_t size, int channels, const char *what, mtl_image *out,
                            mtl_error *err)
{
    memset(out, 0, sizeof(*out));
    if (channels != 0 && channels != 1 && channels != 3)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "cannot decode '%s' to %d channels (1 or 3, or 0 for the file's)",
                        what, channels);
    if (size > (size_t)INT_MAX)
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "'%s' is %zu bytes; images above 2 GiB are not supported", what,
                        size);
    int w, h, n;
    if (!stbi_info_from_memory(bytes, (int)size, &w, &h, &n))
        return mtl_fail(err, MTL_ERR_CORRUPT, "cannot decode image '%s': %s", what, stbi_failure_reason());
    int want = channels ? channels : natural_channels(n);
    uint8_t *pixels = stbi_load_from_memory(bytes, (int)size, &w, &h, &n, want);
    if (!pixels)
        return mtl_fail(err, MTL_ERR_CORRUPT, "cannot decode image '%s': %s", what, stbi_failure_reason());
    out->width = w;
    out->height = h;
    out->channels = want;
    out->pixels = pixels; /* Debian's libstb allocates with malloc, so mtl_image_free's free() matches */
    return MTL_OK;
}

mtl_status mtl_image_load(const char *path, int channels, mtl_image *out, mtl_error *err)
{
    memset(out, 0, sizeof(*out));
    uint8_t *bytes;
    size_t size;
    MTL_TRY(read_file(path, &bytes, &size, err));
    mtl_status st = mtl_image_decode(bytes, size, channels, path, out, err);
    free(bytes);
    return st;
}

mtl_status mtl_image_probe(const char *path, int *width, int *height, int *channels, mtl_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return mtl_fail(err, errno == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO, "cannot open image '%s': %s", path,
                        strerror(errno));
    int w, h, n;
    int ok = stbi_info_from_file(f, &w, &h, &n);
    fclose(f);
    if (!ok)
        return mtl_fail(err, MTL_ERR_CORRUPT, "cannot read the size of image '%s': %s", path, stbi_failure_reason());
    *width = w;
    *height = h;
    *channels = natural_channels(n);
    return MTL_OK;
}

mtl_status mtl_image_probe_bytes(const uint8_t *bytes, size_t size, const char *what, int *width, int *height,
                                 int *channels, mtl_error *err)
{
    int w, h, n;
    if (size > (size_t)INT_MAX || !stbi_info_from_memory(bytes, (int)size, &w, &h, &n))
        return mtl_fail(err, MTL_ERR_CORRUPT, "cannot read the size of image '%s': %s", what,
                        size > (size_t)INT_MAX ? "larger than 2 GiB" : stbi_failure_reason());
    *width = w;
    *height = h;
    *channels = natural_channels(n);
    return MTL_OK;
}

void mtl_image_free(mtl_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    img->pixels = NULL;
}

static mtl_status check_image(const mtl_image *img, const char *what, mtl_error *err)
{
    if (!img->pixels || img->width <= 0 || img->height <= 0 || (img->channels != 1 && img->channels != 3))
        return mtl_fail(err, MTL_ERR_ARGUMENT, "%s: an image of %dx%d with %d channels (1 or 3) is not valid", what,
                        img->width, img->height, img->channels);
    return MTL_OK;
}

/* stb's triangle (tent) filter: bilinear interpolation between pixel centres when enlarging, and a
 * tent average over the covered pixels when shrinking, so downscaled images do not alias. Edges
 * repeat the border pixel. */
mtl_status mtl_image_resize(const mtl_image *in, int width, int height, mtl_image *out, mtl_error *err)
{
    memset(out, 0, sizeof(*out));
    MTL_TRY(check_image(in, "resize", err));
    if (width <= 0 || height <= 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "cannot resize to %dx%d", width, height);
    size_t n = (size_t)width * (size_t)height * (size_t)in->channels;
    uint8_t *pixels = malloc(n);
    if (!pixels)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory resizing to %dx%d", width, height);
    if (width == in->width && height == in->height) {
        memcpy(pixels, in->pixels, n);
    } else if (!stbir_resize_uint8_generic(in->pixels, in->width, in->height, 0, pixels, width, height, 0,
                                           in->channels, STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                           STBIR_FILTER_TRIANGLE, STBIR_COLORSPACE_LINEAR, NULL)) {
        free(pixels);
        return mtl_fail(err, MTL_ERR_NOMEM, "resizing %dx%d to %dx%d failed (out of memory)", in->width, in->height,
                        width, height);
    }
    out->width = width;
    out->height = height;
    out->channels = in->channels;
    out->pixels = pixels;
    return MTL_OK;
}

void mtl_image_to_chw(const mtl_image *img, uint8_t *dst)
{
    const int c = img->channels;
    const size_t plane = (size_t)img->width * (size_t)img->height;
    if (c == 1) {
        memcpy(dst, img->pixels, plane);
        return;
    }
    for (int k = 0; k < c; k++)
        for (size_t i = 0; i < plane; i++)
            dst[(size_t)k * plane + i] = img->pixels[i * (size_t)c + (size_t)k];
}

typedef struct png_buffer {
    uint8_t *data;
    size_t size, capacity;
    int failed;
} png_buffer;

static void png_append(void *context, void *data, int size)
{
    png_buffer *b = context;
    if (b->failed || size <= 0)
        return;
    if (b->size + (size_t)size > b->capacity) {
        size_t cap = b->capacity ? b->capacity : 4096;
        while (cap < b->size + (size_t)size)
            cap *= 2;
        uint8_t *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->capacity = cap;
    }
    memcpy(b->data + b->size, data, (size_t)size);
    b->size += (size_t)size;
}

mtl_status mtl_image_encode_png(const mtl_image *img, uint8_t **bytes, size_t *size, mtl_error *err)
{
    *bytes = NULL;
    *size = 0;
    MTL_TRY(check_image(img, "PNG encoding", err));
    if ((size_t)img->width * (size_t)img->channels > (size_t)INT_MAX)
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "an image %d pixels wide is too wide for PNG encoding", img->width);
    png_buffer b = {0};
    int ok = stbi_write_png_to_func(png_append, &b, img->width, img->height, img->channels, img->pixels,
                                    img->width * img->channels);
    if (!ok || b.failed) {
        free(b.data);
        return mtl_fail(err, MTL_ERR_NOMEM, "PNG encoding of a %dx%d image failed (out of memory)", img->width,
                        img->height);
    }
    *bytes = b.data;
    *size = b.size;
    return MTL_OK;
}

/* Writes all of buf to fd, retrying short writes and interrupted calls. */
static int write_all(int fd, const uint8_t *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

mtl_status mtl_image_write_png(const char *path, const mtl_image *img, mtl_error *err)
{
    uint8_t *bytes;
    size_t size;
    MTL_TRY(mtl_image_encode_png(img, &bytes, &size, err));
    size_t len = strlen(path);
    char *tmp = malloc(len + 5);
    if (!tmp) {
        free(bytes);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory writing '%s'", path);
    }
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    /* a reader (or an interrupted run) sees the old file or the whole new one, never half of one */
    mtl_status st = MTL_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        st = mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    } else {
        int failed = write_all(fd, bytes, size) != 0;
        int saved = errno;
        if (close(fd) != 0 && !failed) {
            failed = 1;
            saved = errno;
        }
        if (failed)
            st = mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", tmp, strerror(saved));
        else if (rename(tmp, path) != 0)
            st = mtl_fail(err, MTL_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        if (st != MTL_OK)
            unlink(tmp);
    }
    free(tmp);
    free(bytes);
    return st;
}
