/* Tests for the prototxt reader: every value kind, the syntax errors with their positions, the
 * readers' complaints, the unused-field check and its suggestions, and a LeNet-style net. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"

static mtl_cfg_node *parse(const char *text)
{
    mtl_cfg_node *root = NULL;
    mtl_error err = {0};
    mtl_status st = mtl_cfg_parse_string(text, "<string>", &root, &err);
    CHECK_MSG(st == MTL_OK, "parse failed: %s", err.message);
    return root;
}

/* Parsing must fail with MTL_ERR_PARSE and a message containing `needle`. */
static void parse_fails(const char *text, const char *needle, int line)
{
    mtl_cfg_node *root = (mtl_cfg_node *)1;
    mtl_error err = {0};
    mtl_status st = mtl_cfg_parse_string(text, "<string>", &root, &err);
    check_report(st == MTL_ERR_PARSE && strstr(err.message, needle) != NULL && root == NULL, __FILE__, line,
                 "parsing %s: got %s '%s', expected a parse error containing '%s'", text, mtl_status_name(st),
                 err.message, needle);
}
#define PARSE_FAILS(text, needle) parse_fails(text, needle, __LINE__)

static void test_value_kinds(void)
{
    mtl_error err = {0};
    mtl_cfg_node *r = parse("i: 42\n"
                            "neg: -7\n"
                            "hex: 0x1F\n"
                            "f: 1.5e-3\n"
                            "lead: .5\n"
                            "suffix: 2.5f\n"
                            "whole: 1e3\n"
                            "b1: true b2: False b3: t b4: 0\n"
                            "e: MAX\n"
                            "s: \"hello\"\n"
                            "s1: 'single'\n"
                            "big: 9223372036854775807\n"
                            "small: -9223372036854775808\n");
    int64_t i;
    double d;
    int b;
    const char *s;
    CHECK_OK(mtl_cfg_int(r, "i", 0, &i, &err), &err);
    CHECK_INT(i, 42);
    CHECK_OK(mtl_cfg_int(r, "neg", 0, &i, &err), &err);
    CHECK_INT(i, -7);
    CHECK_OK(mtl_cfg_int(r, "hex", 0, &i, &err), &err);
    CHECK_INT(i, 31);
    CHECK_OK(mtl_cfg_int(r, "whole", 0, &i, &err), &err);
    CHECK_INT(i, 1000);
    CHECK_OK(mtl_cfg_int(r, "big", 0, &i, &err), &err);
    CHECK(i == INT64_MAX);
    CHECK_OK(mtl_cfg_int(r, "small", 0, &i, &err), &err);
    CHECK(i == INT64_MIN);
    CHECK_OK(mtl_cfg_float(r, "f", 0, &d, &err), &err);
    CHECK_NEAR(d, 1.5e-3, 1e-15);
    CHECK_OK(mtl_cfg_float(r, "lead", 0, &d, &err), &err);
    CHECK_NEAR(d, 0.5, 0);
    CHECK_OK(mtl_cfg_float(r, "suffix", 0, &d, &err), &err);
    CHECK_NEAR(d, 2.5, 0);
    CHECK_OK(mtl_cfg_float(r, "i", 0, &d, &err), &err); /* integers are floats too */
    CHECK_NEAR(d, 42, 0);
    CHECK_OK(mtl_cfg_bool(r, "b1", 0, &b, &err), &err);
    CHECK_INT(b, 1);
    CHECK_OK(mtl_cfg_bool(r, "b2", 1, &b, &err), &err);
    CHECK_INT(b, 0);
    CHECK_OK(mtl_cfg_bool(r, "b3", 0, &b, &err), &err);
    CHECK_INT(b, 1);
    CHECK_OK(mtl_cfg_bool(r, "b4", 1, &b, &err), &err);
    CHECK_INT(b, 0);
    static const char *const pools[] = {"MAX", "AVE", "STOCHASTIC"};
    int e;
    CHECK_OK(mtl_cfg_enum(r, "e", pools, 3, 1, &e, &err), &err);
    CHECK_INT(e, 0);
    CHECK_OK(mtl_cfg_string(r, "s", NULL, &s, &err), &err);
    CHECK(strcmp(s, "hello") == 0);
    CHECK_OK(mtl_cfg_string(r, "s1", NULL, &s, &err), &err);
    CHECK(strcmp(s, "single") == 0);
    CHECK_OK(mtl_cfg_check_unused(r, &err), &err);

    /* Defaults: absent fields and a NULL message. */
    CHECK_OK(mtl_cfg_int(r, "absent", 5, &i, &err), &err);
    CHECK_INT(i, 5);
    CHECK_OK(mtl_cfg_float(NULL, "x", 2.5, &d, &err), &err);
    CHECK_NEAR(d, 2.5, 0);
    CHECK_OK(mtl_cfg_string(NULL, "x", "dflt", &s, &err), &err);
    CHECK(strcmp(s, "dflt") == 0);
    CHECK_OK(mtl_cfg_enum(NULL, "x", pools, 3, 2, &e, &err), &err);
    CHECK_INT(e, 2);
    CHECK_OK(mtl_cfg_bool(NULL, "x", 1, &b, &err), &err);
    CHECK_INT(b, 1);
    mtl_cfg_node *m = (mtl_cfg_node *)1;
    CHECK_OK(mtl_cfg_message(r, "absent_msg", &m, &err), &err);
    CHECK(m == NULL);
    CHECK_INT(mtl_cfg_count(NULL, "x"), 0);
    CHECK(mtl_cfg_field(NULL, "x", 0) == NULL);
    mtl_cfg_free(r);
    mtl_cfg_free(NULL);
}

static void test_inf_nan(void)
{
    mtl_error err = {0};
    mtl_cfg_node *r = parse("a: inf b: -inf c: nan d: -Infinity e: NaN f: INF");
    double d;
    CHECK_OK(mtl_cfg_float(r, "a", 0, &d, &err), &err);
    CHECK(isinf(d) && d > 0);
    CHECK_OK(mtl_cfg_float(r, "b", 0, &d, &err), &err);
    CHECK(isinf(d) && d < 0);
    CHECK_OK(mtl_cfg_float(r, "c", 0, &d, &err), &err);
    CHECK(isnan(d));
    CHECK_OK(mtl_cfg_float(r, "d", 0, &d, &err), &err);
    CHECK(isinf(d) && d < 0);
    CHECK_OK(mtl_cfg_float(r, "e", 0, &d, &err), &err);
    CHECK(isnan(d));
    CHECK_OK(mtl_cfg_float(r, "f", 0, &d, &err), &err);
    CHECK(isinf(d) && d > 0);
    CHECK_INT(mtl_cfg_field(r, "a", 0)->kind, MTL_CFG_NUMBER);
    int64_t i;
    CHECK_FAILS(mtl_cfg_int(r, "a", 0, &i, &err), &err, MTL_ERR_CONFIG, "<string>:1:1: field 'a': expected an integer, found 'inf'");
    mtl_cfg_free(r);
}

static void test_nesting_and_repeats(void)
{
    mtl_error err = {0};
    mtl_cfg_node *r = parse("outer { a: 1 inner: { b: 2 } }\n"
                            "angle < c: 3 >\n"
                            "top: \"x\" top: \"y\"; top: \"z\",\n"
                            "dim: [1, 3, 224, 224]\n"
                            "empty: []\n"
                            "msgs: [{ v: 1 }, { v: 2 }]\n");
    CHECK(r->name == NULL);
    CHECK_INT(r->kind, MTL_CFG_MESSAGE);
    CHECK(strcmp(r->file, "<string>") == 0);
    mtl_cfg_node *outer, *inner, *angle;
    CHECK_OK(mtl_cfg_message(r, "outer", &outer, &err), &err);
    CHECK(outer != NULL && outer->line == 1 && outer->column == 1);
    CHECK_INT(outer->value_column, 7);
    CHECK_OK(mtl_cfg_message(outer, "inner", &inner, &err), &err);
    CHECK(inner != NULL);
    int64_t v;
    CHECK_OK(mtl_cfg_int(outer, "a", 0, &v, &err), &err);
    CHECK_INT(v, 1);
    CHECK_OK(mtl_cfg_int(inner, "b", 0, &v, &err), &err);
    CHECK_INT(v, 2);
    CHECK_OK(mtl_cfg_message(r, "angle", &angle, &err), &err);
    CHECK_OK(mtl_cfg_int(angle, "c", 0, &v, &err), &err);
    CHECK_INT(v, 3);

    CHECK_INT(mtl_cfg_count(r, "top"), 3);
    const char *s;
    CHECK_OK(mtl_cfg_string_at(r, "top", 2, &s, &err), &err);
    CHECK(strcmp(s, "z") == 0);
    CHECK_OK(mtl_cfg_string_at(r, "top", 0, &s, &err), &err);
    CHECK_OK(mtl_cfg_string_at(r, "top", 1, &s, &err), &err);
    CHECK(strcmp(s, "y") == 0);
    CHECK_FAILS(mtl_cfg_string_at(r, "top", 3, &s, &err), &err, MTL_ERR_ARGUMENT, "no occurrence 3");

    CHECK_INT(mtl_cfg_count(r, "dim"), 4);
    int64_t dims[4];
    for (int k = 0; k < 4; k++)
        CHECK_OK(mtl_cfg_int_at(r, "dim", k, &dims[k], &err), &err);
    CHECK(dims[0] == 1 && dims[1] == 3 && dims[2] == 224 && dims[3] == 224);
    double fd;
    CHECK_OK(mtl_cfg_float_at(r, "dim", 1, &fd, &err), &err);
    CHECK_NEAR(fd, 3, 0);
    CHECK_INT(mtl_cfg_count(r, "empty"), 0);
    CHECK_INT(mtl_cfg_count(r, "msgs"), 2);
    for (int k = 0; k < 2; k++) {
        mtl_cfg_node *m = mtl_cfg_field(r, "msgs", k);
        CHECK(m && m->kind == MTL_CFG_MESSAGE);
        CHECK_OK(mtl_cfg_int(m, "v", 0, &v, &err), &err);
        CHECK_INT(v, k + 1);
    }
    CHECK_OK(mtl_cfg_check_unused(r, &err), &err);
    mtl_cfg_free(r);
}

static void test_comments_strings(void)
{
    mtl_error err = {0};
    mtl_cfg_node *r = parse("# leading comment\n"
                            "a: \"tab\\there\\n\" # trailing comment with \"quote\n"
                            "b: 'it\\'s \\\"q\\\" \\\\'\n"
                            "c: \"\\x41\\101\\x4a\"\n"
                            "d: \"con\" 'cat' \"enated\"\n"
                            "e: \"# not a comment\"\n");
    const char *s;
    CHECK_OK(mtl_cfg_string(r, "a", NULL, &s, &err), &err);
    CHECK(strcmp(s, "tab\there\n") == 0);
    CHECK_OK(mtl_cfg_string(r, "b", NULL, &s, &err), &err);
    CHECK(strcmp(s, "it's \"q\" \\") == 0);
    CHECK_OK(mtl_cfg_string(r, "c", NULL, &s, &err), &err);
    CHECK(strcmp(s, "AAJ") == 0);
    CHECK_OK(mtl_cfg_string(r, "d", NULL, &s, &err), &err);
    CHECK(strcmp(s, "concatenated") == 0);
    CHECK_OK(mtl_cfg_string(r, "e", NULL, &s, &err), &err);
    CHECK(strcmp(s, "# not a comment") == 0);
    CHECK_INT(mtl_cfg_field(r, "b", 0)->line, 3);
    CHECK_INT(mtl_cfg_field(r, "b", 0)->value_column, 4);
    CHECK_OK(mtl_cfg_check_unused(r, &err), &err);
    mtl_cfg_free(r);

    r = parse("");
    CHECK(r && r->n_fields == 0);
    mtl_cfg_free(r);
    r = parse("# only a comment");
    CHECK(r && r->n_fields == 0);
    mtl_cfg_free(r);
}

static void test_syntax_errors(void)
{
    PARSE_FAILS("layer {\n  name: \"a\"\n}\n}\n", "<string>:4:1: unexpected '}'");
    PARSE_FAILS("a: 1\nlayer }", "<string>:2:7: expected ':' or '{' after field name 'layer', found '}'");
    PARSE_FAILS("a: 1\n\nlayer {\n  b: 2\n", "<string>:5:1: expected '}' to close 'layer' opened at line 3, column 7, found end of file");
    PARSE_FAILS("x {\n  y: 1 >", "<string>:2:8: expected '}' to close 'x' opened at line 1, column 3, found '>'");
    PARSE_FAILS("a: \"abc\n", "<string>:1:4: unterminated string");
    PARSE_FAILS("a: 1\n  b: 'abc", "<string>:2:6: unterminated string: no closing ' before the end of the file");
    PARSE_FAILS("s: \"ab\\qc\"", "<string>:1:7: invalid escape");
    PARSE_FAILS("s: \"\\xZZ\"", "<string>:1:5: invalid escape '\\x'");
    PARSE_FAILS("s: \"a\\0b\"", "NUL");
    PARSE_FAILS("\n\n  n: 12abc", "<string>:3:6: invalid number '12abc'");
    PARSE_FAILS("n: 1.2.3", "<string>:1:4: invalid number '1.2.3'");
    PARSE_FAILS("n: 1e", "invalid number '1e'");
    PARSE_FAILS("n: -foo", "<string>:1:4: expected a number after '-', found 'foo'");
    PARSE_FAILS("n: - 3", "expected a number after '-'");
    PARSE_FAILS("a {\n  n: }", "<string>:2:6: expected a value after 'n:', found '}'");
    PARSE_FAILS("n:", "<string>:1:3: expected a value after 'n:', found end of file");
    PARSE_FAILS("a:\n  b: 1", "<string>:2:3: expected a value after 'a:', found field name 'b'");
    PARSE_FAILS("12: 3", "<string>:1:1: expected a field name, found '12'");
    PARSE_FAILS("a: 1 @", "<string>:1:6: unexpected character '@'");
    PARSE_FAILS("dim: [1, 2", "<string>:1:11: expected ',' or ']' in the list for 'dim' opened at line 1, column 6, found end of file");
    PARSE_FAILS("dim: [1, ]", "<string>:1:10: expected a value in the list for 'dim', found ']'");
    PARSE_FAILS("a [1]", "expected ':' or '{' after field name 'a', found '['");

    /* Deep nesting is refused, not a stack overflow. */
    size_t depth = 1000;
    char *deep = malloc(depth * 4 + 1);
    CHECK(deep != NULL);
    if (deep) {
        for (size_t k = 0; k < depth; k++)
            memcpy(deep + k * 4, "a { ", 4);
        deep[depth * 4] = '\0';
        PARSE_FAILS(deep, "nested more than");
        free(deep);
    }

    mtl_cfg_node *r = (mtl_cfg_node *)1;
    mtl_error err = {0};
    CHECK_FAILS(mtl_cfg_parse_file("/nonexistent/dir/net.prototxt", &r, &err), &err, MTL_ERR_NOT_FOUND,
                "cannot open '/nonexistent/dir/net.prototxt': ");
    CHECK(r == NULL);
}

static void test_parse_file(void)
{
    char path[] = "/tmp/mtl_test_config_XXXXXX";
    FILE *f = NULL;
    int fd = mkstemp(path);
    if (fd >= 0)
        f = fdopen(fd, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs("base_lr: 0.01\nlr_policy: \"step\"\nbad {\n", f);
    fclose(f);
    mtl_cfg_node *r = NULL;
    mtl_error err = {0};
    char expect[128];
    snprintf(expect, sizeof(expect), "%s:4:1: expected '}' to close 'bad' opened at line 3, column 5", path);
    CHECK_FAILS(mtl_cfg_parse_file(path, &r, &err), &err, MTL_ERR_PARSE, expect);

    f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("base_lr: 0.01\nmomentum: 0.9\n", f);
        fclose(f);
        CHECK_OK(mtl_cfg_parse_file(path, &r, &err), &err);
        double lr = 0;
        CHECK_OK(mtl_cfg_float(r, "base_lr", 0, &lr, &err), &err);
        CHECK_NEAR(lr, 0.01, 1e-12);
        CHECK(strcmp(r->file, path) == 0);
        snprintf(expect, sizeof(expect), "%s:2:1: unknown field 'momentum' at top level", path);
        CHECK_FAILS(mtl_cfg_check_unused(r, &err), &err, MTL_ERR_CONFIG, expect);
        mtl_cfg_free(r);
    }
    remove(path);
}

static void test_reader_errors(void)
{
    mtl_error err = {0};
    mtl_cfg_node *r = parse("num: 1\n"
                            "num: 2\n"
                            "frac: 2.5\n"
                            "huge: 99999999999999999999\n"
                            "msg { }\n"
                            "str: \"20\"\n"
                            "id: MAX\n"
                            "pool: MIN\n"
                            "cpool: max\n"
                            "qpool: \"MAX\"\n"
                            "far: ZZZZZZZ\n"
                            "range: 0\n"
                            "flag: yes\n"
                            "dbl: 1e999\n");
    int64_t i;
    double d;
    int b;
    const char *s;
    mtl_cfg_node *m;
    CHECK_FAILS(mtl_cfg_int(r, "num", 0, &i, &err), &err, MTL_ERR_CONFIG,
                "<string>:2:1: field 'num' given twice (first at line 1)");
    CHECK_FAILS(mtl_cfg_int(r, "frac", 0, &i, &err), &err, MTL_ERR_CONFIG,
                "<string>:3:1: field 'frac': expected an integer, found '2.5' (it has a fractional part)");
    CHECK_FAILS(mtl_cfg_int(r, "huge", 0, &i, &err), &err, MTL_ERR_CONFIG,
                "<string>:4:1: field 'huge': 99999999999999999999 is out of range for a 64-bit integer");
    CHECK_FAILS(mtl_cfg_int(r, "msg", 0, &i, &err), &err, MTL_ERR_CONFIG,
                "<string>:5:1: field 'msg': expected an integer, found a message");
    CHECK_FAILS(mtl_cfg_int(r, "str", 0, &i, &err), &err, MTL_ERR_CONFIG,
                "<string>:6:1: field 'str': expected an integer, found string \"20\"");
    CHECK_FAILS(mtl_cfg_float(r, "id", 0, &d, &err), &err, MTL_ERR_CONFIG,
                "<string>:7:1: field 'id': expected a number, found identifier 'MAX'");
    CHECK_FAILS(mtl_cfg_float(r, "dbl", 0, &d, &err), &err, MTL_ERR_CONFIG, "<string>:14:1: field 'dbl': 1e999 is out of range");
    CHECK_FAILS(mtl_cfg_string(r, "id", NULL, &s, &err), &err, MTL_ERR_CONFIG,
                "<string>:7:1: field 'id': expected a quoted string, found identifier 'MAX'");
    CHECK_FAILS(mtl_cfg_message(r, "id", &m, &err), &err, MTL_ERR_CONFIG, "field 'id': expected a message");
    CHECK_FAILS(mtl_cfg_bool(r, "flag", 0, &b, &err), &err, MTL_ERR_CONFIG,
                "<string>:13:1: field 'flag': expected true or false, found identifier 'yes'");
    CHECK_FAILS(mtl_cfg_int_range(r, "range", 1, 1, 16, &i, &err), &err, MTL_ERR_CONFIG,
                "<string>:12:1: field 'range' must be between 1 and 16, found 0");
    CHECK_FAILS(mtl_cfg_int_range(r, "range", 1, 1, INT64_MAX, &i, &err), &err, MTL_ERR_CONFIG,
                "field 'range' must be at least 1, found 0");
    CHECK_OK(mtl_cfg_int_range(r, "range", 1, 0, 0, &i, &err), &err);
    CHECK_INT(i, 0);
    CHECK_OK(mtl_cfg_int_range(r, "absent", 7, 0, 1, &i, &err), &err); /* defaults are the caller's business */
    CHECK_INT(i, 7);

    static const char *const pools[] = {"MAX", "AVE", "STOCHASTIC"};
    int e;
    CHECK_FAILS(mtl_cfg_enum(r, "pool", pools, 3, 0, &e, &err), &err, MTL_ERR_CONFIG,
                "<string>:8:1: field 'pool': expected one of MAX, AVE, STOCHASTIC, found 'MIN'");
    CHECK_FAILS(mtl_cfg_enum(r, "cpool", pools, 3, 0, &e, &err), &err, MTL_ERR_CONFIG,
                "<string>:9:1: field 'cpool': expected one of MAX, AVE, STOCHASTIC, found 'max'; did you mean 'MAX'?");
    CHECK_FAILS(mtl_cfg_enum(r, "far", pools, 3, 0, &e, &err), &err, MTL_ERR_CONFIG,
                "expected one of MAX, AVE, STOCHASTIC, found 'ZZZZZZZ'");
    CHECK(strstr(err.message, "did you mean") == NULL);
    CHECK_FAILS(mtl_cfg_enum(r, "qpool", pools, 3, 0, &e, &err), &err, MTL_ERR_CONFIG,
                "<string>:10:1: field 'qpool': expected one of MAX, AVE, STOCHASTIC, found string \"MAX\"");
    mtl_cfg_node *n = mtl_cfg_field(r, "str", 0);
    CHECK_FAILS(mtl_cfg_node_int(n, &i, &err), &err, MTL_ERR_CONFIG, "expected an integer");
    CHECK_FAILS(mtl_cfg_node_int(NULL, &i, &err), &err, MTL_ERR_ARGUMENT, "NULL");
    mtl_cfg_free(r);

    r = parse("a { b: 1 }");
    CHECK_FAILS(mtl_cfg_fail(r->fields[0], &err, MTL_ERR_CONFIG, "custom %d", 5), &err, MTL_ERR_CONFIG,
                "<string>:1:1: custom 5");
    CHECK_FAILS(mtl_cfg_fail(r->fields[0]->fields[0], &err, MTL_ERR_CONFIG, "x"), &err, MTL_ERR_CONFIG,
                "<string>:1:5: x");
    mtl_cfg_free(r);
}

static void test_check_unused(void)
{
    mtl_error err = {0};
    mtl_cfg_node *r = parse("layer {\n"
                            "  convolution_param {\n"
                            "    num_ouput: 20\n"
                            "    kernel_size: 5\n"
                            "  }\n"
                            "}\n");
    mtl_cfg_node *layer = mtl_cfg_field(r, "layer", 0);
    mtl_cfg_node *conv;
    CHECK_OK(mtl_cfg_message(layer, "convolution_param", &conv, &err), &err);
    int64_t v;
    CHECK_OK(mtl_cfg_int(conv, "num_output", 0, &v, &err), &err);
    CHECK_OK(mtl_cfg_int(conv, "kernel_size", 0, &v, &err), &err);
    CHECK_OK(mtl_cfg_int(conv, "stride", 1, &v, &err), &err);
    CHECK_FAILS(mtl_cfg_check_unused(r, &err), &err, MTL_ERR_CONFIG,
                "<string>:3:5: unknown field 'num_ouput' in convolution_param; did you mean 'num_output'?");
    mtl_cfg_free(r);

    /* Nothing close: list the known names. */
    r = parse("a: 1\nzzzzzzzz: 2\n");
    CHECK_OK(mtl_cfg_int(r, "a", 0, &v, &err), &err);
    CHECK_OK(mtl_cfg_int(r, "bb", 0, &v, &err), &err);
    CHECK_OK(mtl_cfg_int(r, "a", 0, &v, &err), &err); /* read twice, listed once */
    CHECK_FAILS(mtl_cfg_check_unused(r, &err), &err, MTL_ERR_CONFIG,
                "<string>:2:1: unknown field 'zzzzzzzz' at top level; valid fields here: a, bb");
    CHECK(strstr(err.message, "a, bb, a") == NULL);
    mtl_cfg_free(r);

    /* A message nobody read reports itself, not its insides. */
    r = parse("known: 1\nextra_param { x: 1 }\n");
    CHECK_OK(mtl_cfg_int(r, "known", 0, &v, &err), &err);
    CHECK_FAILS(mtl_cfg_check_unused(r, &err), &err, MTL_ERR_CONFIG, "<string>:2:1: unknown field 'extra_param' at top level");
    mtl_cfg_free(r);

    /* A message taken but whose fields nobody asked for. */
    r = parse("p {\n  q: 1\n}\n");
    mtl_cfg_node *p;
    CHECK_OK(mtl_cfg_message(r, "p", &p, &err), &err);
    CHECK_FAILS(mtl_cfg_check_unused(r, &err), &err, MTL_ERR_CONFIG, "<string>:2:3: unknown field 'q' in p; nothing reads");
    mtl_cfg_free(r);

    /* accept() takes a field, and a whole message, without reading it. */
    r = parse("engine: CAFFE\nignored { deep { x: 1 } }\n");
    mtl_cfg_accept(r, "engine");
    mtl_cfg_accept(r, "ignored");
    mtl_cfg_accept(r, "not_there");
    CHECK_OK(mtl_cfg_check_unused(r, &err), &err);
    mtl_cfg_free(r);

    /* Repeated fields are checked in file order, the first unread one reported. */
    r = parse("top: \"a\"\ntop: \"b\"\n");
    CHECK_INT(mtl_cfg_count(r, "top"), 2);
    mtl_cfg_field(r, "top", 0);
    CHECK_FAILS(mtl_cfg_check_unused(r, &err), &err, MTL_ERR_CONFIG, "<string>:2:1: field 'top' at top level was not used");
    mtl_cfg_free(r);
}

static void test_suggest(void)
{
    static const char *const names[] = {"num_output", "kernel_size", "stride", "pad", "bias_term", "group"};
    char buf[128];
    CHECK_INT(mtl_cfg_suggest("num_ouput", names, 6, 3, buf, sizeof(buf)), 1);
    CHECK(strcmp(buf, "num_output") == 0);
    CHECK_INT(mtl_cfg_suggest("Stirde", names, 6, 3, buf, sizeof(buf)), 1); /* transposition, case */
    CHECK(strcmp(buf, "stride") == 0);
    CHECK_INT(mtl_cfg_suggest("kernel", names, 6, 3, buf, sizeof(buf)), 1); /* prefix */
    CHECK(strcmp(buf, "kernel_size") == 0);
    CHECK_INT(mtl_cfg_suggest("qwertyuiop", names, 6, 3, buf, sizeof(buf)), 0);
    CHECK(buf[0] == '\0');
    static const char *const abc[] = {"cat", "bat", "hat", "bar", "cat"};
    CHECK_INT(mtl_cfg_suggest("xat", abc, 5, 3, buf, sizeof(buf)), 3);
    CHECK(strcmp(buf, "cat, bat or hat") == 0);
    CHECK_INT(mtl_cfg_suggest("cat", abc, 5, 2, buf, sizeof(buf)), 2); /* exact first, duplicates once */
    CHECK(strcmp(buf, "cat or bat") == 0);
    CHECK_INT(mtl_cfg_suggest("bar", abc, 5, 1, buf, sizeof(buf)), 1);
    CHECK(strcmp(buf, "bar") == 0);
    char tiny[6];
    CHECK_INT(mtl_cfg_suggest("xat", abc, 5, 3, tiny, sizeof(tiny)), 3);
    CHECK(strlen(tiny) < sizeof(tiny));
    CHECK_INT(mtl_cfg_suggest("xat", abc, 5, 3, NULL, 0), 3);
}

static const char *const lenet =
    "name: \"LeNet\"\n"
    "layer {\n"
    "  name: \"mnist\"\n"
    "  type: \"Data\"\n"
    "  top: \"data\"\n"
    "  top: \"label\"\n"
    "  include { phase: TRAIN }\n"
    "  transform_param { scale: 0.00390625 }\n"
    "  data_param { source: \"examples/mnist/mnist_train_lmdb\" batch_size: 64 backend: LMDB }\n"
    "}\n"
    "layer {\n"
    "  name: \"conv1\"\n"
    "  type: \"Convolution\"\n"
    "  bottom: \"data\"\n"
    "  top: \"conv1\"\n"
    "  param { lr_mult: 1 }\n"
    "  param { lr_mult: 2 }\n"
    "  convolution_param {\n"
    "    num_output: 20\n"
    "    kernel_size: 5\n"
    "    stride: 1\n"
    "    weight_filler { type: \"xavier\" }\n"
    "    bias_filler { type: \"constant\" }\n"
    "  }\n"
    "}\n"
    "layer {\n"
    "  name: \"pool1\" type: \"Pooling\" bottom: \"conv1\" top: \"pool1\"\n"
    "  pooling_param { pool: MAX kernel_size: 2 stride: 2 }\n"
    "}\n";

static void test_lenet(void)
{
    mtl_error err = {0};
    mtl_cfg_node *r = parse(lenet);
    const char *s;
    CHECK_OK(mtl_cfg_string(r, "name", NULL, &s, &err), &err);
    CHECK(strcmp(s, "LeNet") == 0);
    int n = mtl_cfg_count(r, "layer");
    CHECK_INT(n, 3);
    static const char *const phases[] = {"TRAIN", "TEST"};
    static const char *const backends[] = {"LEVELDB", "LMDB"};
    static const char *const pools[] = {"MAX", "AVE", "STOCHASTIC"};
    for (int k = 0; k < n; k++) {
        mtl_cfg_node *layer = mtl_cfg_field(r, "layer", k);
        const char *type;
        CHECK_OK(mtl_cfg_string(layer, "name", NULL, &s, &err), &err);
        CHECK_OK(mtl_cfg_string(layer, "type", NULL, &type, &err), &err);
        for (int t = 0; t < mtl_cfg_count(layer, "top"); t++)
            CHECK_OK(mtl_cfg_string_at(layer, "top", t, &s, &err), &err);
        for (int t = 0; t < mtl_cfg_count(layer, "bottom"); t++)
            CHECK_OK(mtl_cfg_string_at(layer, "bottom", t, &s, &err), &err);
        int64_t v;
        double d;
        int e;
        for (int t = 0; t < mtl_cfg_count(layer, "include"); t++)
            CHECK_OK(mtl_cfg_enum(mtl_cfg_field(layer, "include", t), "phase", phases, 2, 0, &e, &err), &err);
        for (int t = 0; t < mtl_cfg_count(layer, "param"); t++) {
            CHECK_OK(mtl_cfg_float(mtl_cfg_field(layer, "param", t), "lr_mult", 1, &d, &err), &err);
            CHECK_NEAR(d, t + 1, 0);
        }
        mtl_cfg_node *m;
        if (strcmp(type, "Data") == 0) {
            CHECK_OK(mtl_cfg_message(layer, "transform_param", &m, &err), &err);
            CHECK_OK(mtl_cfg_float(m, "scale", 1, &d, &err), &err);
            CHECK_NEAR(d, 1.0 / 256, 1e-12);
            CHECK_OK(mtl_cfg_message(layer, "data_param", &m, &err), &err);
            CHECK_OK(mtl_cfg_string(m, "source", NULL, &s, &err), &err);
            CHECK_OK(mtl_cfg_int(m, "batch_size", 0, &v, &err), &err);
            CHECK_INT(v, 64);
            CHECK_OK(mtl_cfg_enum(m, "backend", backends, 2, 0, &e, &err), &err);
            CHECK_INT(e, 1);
        } else if (strcmp(type, "Convolution") == 0) {
            CHECK_OK(mtl_cfg_message(layer, "convolution_param", &m, &err), &err);
            CHECK_OK(mtl_cfg_int_range(m, "num_output", 0, 1, INT64_MAX, &v, &err), &err);
            CHECK_INT(v, 20);
            CHECK_OK(mtl_cfg_int(m, "kernel_size", 0, &v, &err), &err);
            CHECK_INT(v, 5);
            CHECK_OK(mtl_cfg_int(m, "stride", 1, &v, &err), &err);
            mtl_cfg_node *filler;
            CHECK_OK(mtl_cfg_message(m, "weight_filler", &filler, &err), &err);
            CHECK_OK(mtl_cfg_string(filler, "type", "constant", &s, &err), &err);
            CHECK(strcmp(s, "xavier") == 0);
            CHECK_INT(filler->line, 22);
            CHECK_INT(filler->column, 5);
            CHECK_OK(mtl_cfg_message(m, "bias_filler", &filler, &err), &err);
            CHECK_OK(mtl_cfg_string(filler, "type", "constant", &s, &err), &err);
        } else {
            CHECK_OK(mtl_cfg_message(layer, "pooling_param", &m, &err), &err);
            CHECK_OK(mtl_cfg_enum(m, "pool", pools, 3, 1, &e, &err), &err);
            CHECK_INT(e, 0);
            CHECK_OK(mtl_cfg_int(m, "kernel_size", 0, &v, &err), &err);
            CHECK_OK(mtl_cfg_int(m, "stride", 1, &v, &err), &err);
            CHECK_INT(v, 2);
        }
    }
    CHECK_OK(mtl_cfg_check_unused(r, &err), &err);
    mtl_cfg_free(r);
}

int main(void)
{
    test_value_kinds();
    test_inf_nan();
    test_nesting_and_repeats();
    test_comments_strings();
    test_syntax_errors();
    test_parse_file();
    test_reader_errors();
    test_check_unused();
    test_suggest();
    test_lenet();
    return check_finish();
}
