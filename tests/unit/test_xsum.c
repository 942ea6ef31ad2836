/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_xsum.c — cmocka tests of the exact double accumulator (stats/xsum.c): a total known from
 * Python's math.fsum (correctly rounded) over values from subnormals to 2^1000 with cancellation,
 * the same bits in any order and grouping, merges, carries past 2^30 additions, signs, NaN.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "stats/xsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Generated with /usr/bin/python3: random.seed(7); 300 values of mixed scales, then the negatives
 * of those above 2^800 (so the total depends on the small ones), shuffled. */
/* math.fsum of these (Python, correctly rounded): -2.5434171516925782e+17 */
static const double xs_vals[] = {
    -0x1.7db2f4fbdf720p-7,
    -0x1.b380fdfef7e00p+912,
    0x1.b380fdfef7e00p+912,
    -0x1.f7ee2859350b8p-2,
    -0x1.497d79942739cp+923,
    -0x1.67e261aecbaacp+931,
    0x1.e3932d3977350p-30,
    -0x1.92dd78e6afd00p-3,
    -0x1.c371e81cf69a0p+912,
    0x1.34f36ef615676p+975,
    -0x1.cfc8659f7e668p+997,
    0x1.9b3443deb54cap-24,
    0x1.77a1055aee154p+952,
    -0x1.e8f74b59a532cp-1,
    -0x1.4740319802398p+955,
    -0x1.a7fd72c87e4c6p-1,
    0x0.000030af2eaeap-1022,
    -0x1.4f8457ede1656p-1,
    -0x1.b70b305d73088p+57,
    0x1.c371e81cf69a0p+912,
    -0x1.e017747aa4434p-1,
    0x1.060b907585c68p+972,
    -0x1.325d8bd8161fcp+968,
    -0x1.d31b5df5dd8c8p-2,
    0x1.88ca262837b44p+32,
    0x1.843059cc5c0e2p-12,
    0x1.bf24f96ba99d0p+944,
    -0x1.026684a680076p+965,
    -0x0.0000000000079p-1022,
    -0x0.0000000000f1cp-1022,
    -0x1.3939dbc0375ecp-1,
    0x1.88fc0f1f0592ep+959,
    0x1.0c13196669214p+54,
    -0x1.6105952bd59c0p+53,
    -0x1.b4f44f19c8878p-3,
    -0x1.e9fc3ad24b1b4p+910,
    0x1.32c71458171ecp-1,
    -0x1.119a5e752fabcp-1004,
    -0x1.9a747653b9734p+909,
    0x1.1e761230fbe80p+895,
    0x1.d96a10b394fb0p-2,
    0x1.d378b02c1165ap+956,
    -0x1.b7ff319015e08p+925,
    -0x1.50da8a258b9b0p+54,
    -0x1.fe3781d67539ap+35,
    0x1.44a4643bbbe9cp-2,
    -0x1.bf24f96ba99d0p+944,
    0x1.530a30cb68662p-1,
    -0x1.027141cd11b06p-1,
    -0x1.27f2183b416a0p-60,
    -0x1.7f5524623aec4p-1,
    -0x1.4617645d6205cp+35,
    0x1.e93c6f7b4a580p+944,
    0x1.352a9c7f22b3ep+936,
    0x1.3bd04d2bcc158p-13,
    -0x1.5a9553e575288p+987,
    -0x1.0b2266d0db5f0p-1,
    0x1.57e18339c705ap-1,
    -0x1.53857c6226bb8p+946,
    0x0.000001f77b3f8p-1022,
    -0x1.187c940308ea8p-3,
    -0x0.0000000000001p-1022,
    0x1.340b17f91bf22p-1021,
    -0x1.d9818dad60112p+990,
    0x1.c84807f71bce2p-1,
    0x1.53857c6226bb8p+946,
    0x1.ac97e2e4e914ap-1,
    0x1.938acaaa05e10p-2,
    0x1.5a9553e575288p+987,
    -0x1.739307caaba32p-46,
    0x0.00000c3ba8463p-1022,
    0x1.802ab6b021618p+927,
    0x0.0000000000035p-1022,
    -0x0.05b1b1dbcbae1p-1022,
    0x0.0000000053ac9p-1022,
    -0x1.7dc0c03856034p+998,
    -0x1.73c9a21721d6ap-1,
    0x1.56be3e6ca0648p-2,
    -0x1.2004ef83c42a0p-5,
    0x1.fc63f8e12f08ap-4,
    -0x1.908dbf60fc43cp+10,
    -0x1.e7a370f31a50cp-39,
    0x1.73f799cf48c60p-3,
    -0x1.9b9a2cd38edb0p-3,
    0x1.46a26cf916944p-28,
    -0x1.6a1a8f89fe68ep-11,
    0x1.3d15e7ecfd000p-10,
    -0x1.4bb97e54e4650p-3,
    0x1.a32175a64f760p-23,
    0x0.000000000f1edp-1022,
    -0x0.0000f6b353406p-1022,
    0x1.2d669a6b86290p-52,
    -0x1.9be8a9bf033a6p-1,
    -0x1.43acf971b23c8p-2,
    0x1.e8f348f9ee8bcp-2,
    0x1.3fb5c22868180p-41,
    -0x1.060b907585c68p+972,
    0x1.cfc8659f7e668p+997,
    0x1.0b8599a09f768p+12,
    -0x1.17c56440e73aap-57,
    -0x1.1e761230fbe80p+895,
    -0x1.33cfa52754974p+934,
    -0x1.1f245e206cb8cp-49,
    0x1.a2ef80ba73a10p-3,
    -0x1.b7f5ab598e27ap-1,
    -0x1.3348b33dbe03cp+2,
    0x1.922e59f8bcf96p-36,
    -0x1.f1671a76f28e2p+19,
    0x1.2ca0143eed740p-1014,
    0x1.07a70c1e840b0p+16,
    -0x1.e9865d98401c4p+964,
    0x1.b7ff319015e08p+925,
    -0x1.1ad4106c3d544p-42,
    -0x0.00000000002cbp-1022,
    -0x1.ac4db5fb81f60p+38,
    -0x1.95fa5f425d75ep-1020,
    -0x1.c56b730a82e90p-22,
    0x1.7391ecec9ffb8p+926,
    0x0.0000000000691p-1022,
    0x1.9650271fcd544p-1,
    -0x1.737bb80c01c64p+914,
    -0x1.fbf91f9caac16p-1,
    0x1.325d8bd8161fcp+968,
    0x1.ccea09f25c460p-1009,
    0x1.297579ccef904p-1,
    -0x1.0bd76387eb7d8p+913,
    0x1.1d277e677f228p-3,
    -0x1.ea16fd7e2d49ap+991,
    0x0.00016093f42d9p-1022,
    -0x1.9c3b28b9e3828p-1,
    -0x1.1dc090c058604p+941,
    -0x1.1539c7eb61da8p-34,
    0x1.b1c03efabe200p-7,
    -0x1.1c41147778e9cp+932,
    0x1.1dc090c058604p+941,
    -0x0.000000682ea57p-1022,
    -0x1.88fc0f1f0592ep+959,
    0x0.0000000001d92p-1022,
    0x1.2bd16fad3b4b0p-1009,
    0x1.f9d279a2635c4p-12,
    0x1.67d96a7d575d0p+935,
    -0x1.c14104e5f657cp-56,
    -0x1.89a90a4ff0288p-35,
    0x1.67e261aecbaacp+931,
    -0x0.000000685c176p-1022,
    -0x1.eec3aa2ecaafcp-1,
    0x1.b5123576cdf84p-1004,
    -0x1.1d9cb9fa09944p-1,
    0x1.56a508f1c1c5cp-1021,
    0x1.cb122e9e6397cp-2,
    -0x1.ea35a66d25520p-5,
    0x1.0048d89a53790p+994,
    0x1.323248e03ba86p+963,
    -0x1.84c67ab8c5682p+906,
    -0x1.4d6f6fff44a40p-57,
    -0x1.c49bee0b8ed14p-1007,
    -0x0.0000000000138p-1022,
    0x1.6b23247535380p+49,
    -0x1.d378b02c1165ap+956,
    0x1.497d79942739cp+923,
    -0x1.bb093a01f6698p-1,
    0x0.00000050eda83p-1022,
    0x0.0982083f7ba38p-1022,
    -0x1.51ea8f80e1b1cp-45,
    -0x1.810ad4fcfcdf0p+899,
    -0x1.e02302c3e5170p-2,
    0x1.44e4ea06324b0p+944,
    0x1.3f3294256badcp-1012,
    -0x0.001402db0b7dfp-1022,
    -0x0.00000a0187b87p-1022,
    -0x0.0000be7b2117ep-1022,
    -0x1.a0285f0714b0ap-1,
    0x1.e257f12203602p-1,
    -0x0.2f34bf99ecc1cp-1022,
    -0x1.b1d89ff348e80p-43,
    0x0.000000001bd13p-1022,
    -0x1.cd56278884352p+32,
    0x1.1b5e817a1d9b0p-4,
    0x1.e8e5438798d40p+958,
    -0x1.0e0212cb105f8p+940,
    -0x0.001400de3fee0p-1022,
    0x1.1eb05279d7684p+50,
    0x0.00109b9e91a5ap-1022,
    0x1.e9865d98401c4p+964,
    0x1.e999cb0afd45ap-1,
    -0x0.00000099635cbp-1022,
    0x1.3f448bfc77120p-1016,
    -0x1.2bfaf467e6460p+942,
    -0x1.7391ecec9ffb8p+926,
    -0x1.876178b6ec4cep-1,
    -0x0.000000001fb78p-1022,
    0x1.650d55683c424p+50,
    -0x1.34f36ef615676p+975,
    0x1.88055491918f0p-1,
    -0x1.a3fa3ee4180c4p+17,
    0x1.4740319802398p+955,
    -0x1.77a1055aee154p+952,
    -0x0.0024c694a549dp-1022,
    -0x1.0048d89a53790p+994,
    0x1.33cfa52754974p+934,
    0x1.2a94d87223c68p-1017,
    0x1.2548ae296259cp-2,
    -0x1.e7cddf83500bcp-1,
    -0x1.a2e8f47cdc614p+906,
    0x1.4db5f82e3c350p-3,
    0x1.cef81ae4de780p-47,
    0x1.74e3c51be03dcp+990,
    0x1.d9818dad60112p+990,
    0x1.0024d219834c4p+0,
    0x1.eb14440dd27a4p+956,
    -0x1.810a205f0f694p-2,
    -0x1.96cbfc852f5d8p-3,
    0x1.9b66091d1a690p-1021,
    -0x1.eb14440dd27a4p+956,
    -0x1.5e42115e81140p+23,
    0x1.fb9f8f341e040p+973,
    -0x1.336ac56ea3308p+982,
    0x1.10ac9f3abd240p-1013,
    0x1.e58dd991cbc60p+946,
    0x1.e9fc3ad24b1b4p+910,
    -0x1.1d45660a5d27cp-2,
    0x1.a815d5037620cp+996,
    0x1.0e0212cb105f8p+940,
    -0x1.2788c43a62470p-34,
    -0x1.7bac7e7a783c8p-1,
    0x1.69178618fa8b8p+42,
    0x0.00000000017aep-1022,
    -0x1.c6d19ded35fe0p-41,
    -0x1.8a9eb44b05e18p+903,
    0x1.a4515f57835e6p-1,
    0x1.737bb80c01c64p+914,
    0x1.1c41147778e9cp+932,
    -0x0.0000000000005p-1022,
    -0x1.44e4ea06324b0p+944,
    -0x1.78366032c4e96p+43,
    0x1.9a747653b9734p+909,
    0x1.b5d86983b15a0p+904,
    -0x1.169d4614134f0p-3,
    -0x1.323248e03ba86p+963,
    0x1.ea16fd7e2d49ap+991,
    0x1.a2e8f47cdc614p+906,
    -0x0.0000178df95edp-1022,
    0x1.0bd76387eb7d8p+913,
    0x1.12abab24ca91cp-1,
    0x1.654fb8be79038p-1,
    0x1.026684a680076p+965,
    0x1.c4cafcf6c2748p-28,
    -0x1.d32938966b14ep+990,
    0x1.bac795d5adca0p-4,
    -0x1.3c1a3edc8dfb4p-1,
    0x1.2b1d3f9404268p+49,
    0x1.bd1661ded5700p-8,
    -0x1.4f5e71ab8a168p-3,
    -0x1.74e3c51be03dcp+990,
    0x1.810ad4fcfcdf0p+899,
    0x0.0000000002f8bp-1022,
    -0x1.59cd3171eddeap-1,
    -0x1.13102d4045354p+53,
    -0x1.8537fb8b8c6c4p-12,
    -0x1.5eafaf5d9034ap-1014,
    0x1.9cc43ce14e4c0p-7,
    -0x1.e58dd991cbc60p+946,
    -0x1.1d3e185e13c2cp-1,
    -0x1.86a72f80db886p-1001,
    -0x1.a815d5037620cp+996,
    0x0.0000000001395p-1022,
    -0x1.d0216d3106feep-1,
    0x1.7dc0c03856034p+998,
    0x1.953177e6f1a3cp-1,
    -0x1.05aac304d2be0p+978,
    -0x1.aebbf088c17aap-1,
    0x1.bb9f063268dd0p-38,
    0x1.5262e3d75d674p-2,
    -0x1.163d0f09c85bcp-2,
    0x1.25cd4ea906920p-16,
    0x1.c8f74ffcf00fcp-18,
    0x1.336ac56ea3308p+982,
    -0x1.098fa37463842p-1001,
    0x0.000005f2a8b66p-1022,
    -0x0.0000000000297p-1022,
    -0x1.e93c6f7b4a580p+944,
    0x1.ff4c7cdee0a84p-10,
    -0x1.101a151837100p-6,
    -0x0.03daf7d59d9bap-1022,
    -0x1.2ddb74e2773d2p+33,
    -0x1.b5d86983b15a0p+904,
    0x0.756514ab3b74cp-1022,
    -0x0.000000000000ep-1022,
    0x1.968e18e37286ep-42,
    0x1.23a737471faa8p-3,
    0x1.c653923bf3fa8p-1010,
    0x1.059225c15ecdep+932,
    -0x1.ed1faa222a6c2p-1,
    -0x1.ea63c5ea8fd9cp-2,
    -0x1.f48b3291bafa4p-42,
    -0x1.3e72664d02d38p-3,
    -0x1.645e2a888a9a2p+1,
    -0x0.0006a8625f0d0p-1022,
    0x1.94c5a58944dd6p-1,
    0x1.5850e3988f278p+51,
    -0x1.a2f7c5de2fb88p+43,
    -0x1.fb9f8f341e040p+973,
    0x1.abbf137067d5ap-1007,
    0x1.816cf80d696aep-1,
    -0x1.d3cc5a39d5db0p-3,
    -0x1.e8e5438798d40p+958,
    0x0.0000000075ac1p-1022,
    -0x0.00000040671d8p-1022,
    0x1.30d7a088f96a2p-1,
    -0x1.b24daf641b434p-53,
    -0x1.b734f2890bdb0p-3,
    -0x0.3432fc7472120p-1022,
    -0x1.ee134fdaeec08p-3,
    0x1.71758a881ed14p-2,
    0x1.84c67ab8c5682p+906,
    0x1.d30608d8bee92p+21,
    0x1.8a9eb44b05e18p+903,
    -0x1.56bec559a0330p-1008,
    -0x0.000126b2287d2p-1022,
    0x1.33018934c1ff0p-4,
    0x1.05aac304d2be0p+978,
    -0x1.648500bcfdbc8p-1,
    -0x1.802ab6b021618p+927,
    -0x1.476ded4e011f8p-18,
    -0x1.be9b1afef3b8cp-2,
    -0x0.00000001959abp-1022,
    -0x1.422413cd26f24p+44,
    0x1.04c6b46de2fb0p+31,
    0x1.a9d2988745680p-5,
    -0x1.93580d8ef2642p+10,
    -0x1.352a9c7f22b3ep+936,
    -0x1.e8599865bb83ep-1,
    0x1.8a4aea182f4c0p-5,
    0x1.c3f271fc17348p+1,
    -0x1.6574fd7560c20p-39,
    -0x1.7aaff3f42d330p-21,
    0x1.763781e25a760p-14,
    0x1.25f2046063a00p-4,
    0x1.2bfaf467e6460p+942,
    0x0.0000000001f26p-1022,
    -0x1.bd7693cdb5792p-1,
    0x1.dcd7bff0f21bcp-1,
    -0x1.059225c15ecdep+932,
    0x1.856bf9767fa00p+0,
    -0x1.67d96a7d575d0p+935,
    0x1.d4ac40a2cf628p-45,
    -0x1.7ca06888ce510p-1014,
    0x1.9a7c80825de60p-43,
    0x1.62d320e1e4fbep+53,
    0x1.d32938966b14ep+990,
    -0x1.261d0dda8011ap-1,
    0x1.a3db82deb5c40p-1,
    0x0.01f08c96c6068p-1022,
    -0x1.0ea4946bf6710p+18,
};
static const double xs_fsum = -0x1.c3cd38a01d14bp+57;

#define NV (sizeof xs_vals / sizeof xs_vals[0])

static double sum_in_order(const size_t *order)
{
    pcbm_xsum x;
    pcbm_xsum_clear(&x);
    for (size_t k = 0; k < NV; k++)
        pcbm_xsum_add(&x, xs_vals[order ? order[k] : k]);
    return pcbm_xsum_value(&x);
}

static void test_known_total(void **state)
{
    (void)state;
    double v = sum_in_order(NULL);
    assert_memory_equal(&v, &xs_fsum, sizeof v);
}

/* Any order, and any grouping into merged accumulators, gives the same bits. */
static void test_order_and_grouping(void **state)
{
    (void)state;
    size_t order[NV];
    for (size_t k = 0; k < NV; k++)
        order[k] = k;
    srand(3);
    for (int round = 0; round < 20; round++) {
        for (size_t k = NV - 1; k > 0; k--) {
            size_t j = (size_t)rand() % (k + 1), t = order[k];
            order[k] = order[j], order[j] = t;
        }
        double v = sum_in_order(order);
        assert_memory_equal(&v, &xs_fsum, sizeof v);
        pcbm_xsum part[3], total;
        for (int p = 0; p < 3; p++)
            pcbm_xsum_clear(&part[p]);
        for (size_t k = 0; k < NV; k++)
            pcbm_xsum_add(&part[(size_t)rand() % 3], xs_vals[order[k]]);
        pcbm_xsum_clear(&total);
        pcbm_xsum_combine(&total, part, sizeof part[0]);
        pcbm_xsum_combine(&total, &part[1], sizeof part[0]);
        pcbm_xsum_combine(&total, &part[2], sizeof part[0]);
        v = pcbm_xsum_value(&total);
        assert_memory_equal(&v, &xs_fsum, sizeof v);
    }
}

static void test_small_cases(void **state)
{
    (void)state;
    pcbm_xsum x;
    pcbm_xsum_clear(&x);
    assert_true(pcbm_xsum_value(&x) == 0.0);
    pcbm_xsum_add(&x, 1e308);
    pcbm_xsum_add(&x, 1.0);
    pcbm_xsum_add(&x, -1e308);
    assert_true(pcbm_xsum_value(&x) == 1.0);
    pcbm_xsum_add(&x, -3.0);
    assert_true(pcbm_xsum_value(&x) == -2.0);
    pcbm_xsum_clear(&x);
    pcbm_xsum_add(&x, 0x1p-1074);
    pcbm_xsum_add(&x, 0x1p-1074);
    assert_true(pcbm_xsum_value(&x) == 0x1p-1073);
    pcbm_xsum_add(&x, NAN);
    assert_true(isnan(pcbm_xsum_value(&x)));
    /* 2^-60 added 2^20 times to 1: exactly 1 + 2^-40 */
    pcbm_xsum_clear(&x);
    pcbm_xsum_add(&x, 1.0);
    for (int k = 0; k < (1 << 20); k++)
        pcbm_xsum_add(&x, 0x1p-60);
    assert_true(pcbm_xsum_value(&x) == 1.0 + 0x1p-40);
}

/* Past the 2^30 additions at which carries are propagated: 2^30 + 5 ones. */
static void test_carries(void **state)
{
    (void)state;
    pcbm_xsum x;
    pcbm_xsum_clear(&x);
    for (long k = 0; k < (1l << 30) + 5; k++)
        pcbm_xsum_add(&x, 0.75);
    assert_true(pcbm_xsum_value(&x) == 0.75 * (double)((1l << 30) + 5));
}

static void test_tile_partials(void **state)
{
    (void)state;
    float a[5] = {1.0f, -2.0f, 3.0f, 0.5f, -0.25f}, b[5] = {2.0f, 2.0f, 2.0f, 2.0f, 4.0f};
    assert_true(pcbm_xsum_dot_f32(a, b, 5) == 2.0 - 4.0 + 6.0 + 1.0 - 1.0);
    assert_true(pcbm_xsum_abs_f32(a, 5) == 6.75);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_total),
        cmocka_unit_test(test_order_and_grouping),
        cmocka_unit_test(test_small_cases),
        cmocka_unit_test(test_carries),
        cmocka_unit_test(test_tile_partials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
