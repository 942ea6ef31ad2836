/* SPDX-License-Identifier: Apache-2.0 */
/*
 * card.h — the model card (README.md) of a merged model.
 */
#ifndef PCBM_CARD_H
#define PCBM_CARD_H

#include "../common/common.h"

#define PCBM_CARD_NAME "README.md"

/* The card's Markdown for the merge o whose merge_report.json is report_json; ids[0..ntasks]
 * are the inputs' identities. NULL when out of memory or the report does not parse. */
char *pcbm_model_card(const pcbm_merge_opts *o, const char *report_json, const uint64_t *ids);

#endif /* PCBM_CARD_H */
