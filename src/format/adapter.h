/* SPDX-License-Identifier: Apache-2.0 */
/*
 * adapter.h — PEFT LoRA adapters as task models: a folder with adapter_config.json and
 * adapter_model.safetensors. The config is read here (format/adapter.c); the layout matches the
 * adapter's keys to base tensors (sched/lora.c) and the tile passes form ΔW (merge/lora_delta.c).
 */
#ifndef PCBM_ADAPTER_H
#define PCBM_ADAPTER_H

#include "safetensors.h"

#define PCBM_ADAPTER_CONFIG "adapter_config.json"
#define PCBM_ADAPTER_WEIGHTS "adapter_model.safetensors"
#define PCBM_ADAPTER_PREFIX "base_model.model."

typedef struct pcbm_adapter_pattern {
    char *key;              /* a module name or a regular expression, as PEFT matches it */
    double value;
} pcbm_adapter_pattern;

struct pcbm_adapter {
    char *config_path;
    char *base_model;       /* base_model_name_or_path, or NULL */
    char *targets;          /* target_modules as written: names joined by ',', or the regex */
    unsigned r;
    double alpha;
    bool rslora;
    bool fan_in_fan_out;
    pcbm_adapter_pattern *rank_pat, *alpha_pat;
    size_t nrank, nalpha;
    uint64_t config_hash;   /* xxh3-64 of the config file's bytes: part of the model's identity */
};

/* Does dir look like an adapter folder (adapter_config.json or adapter_model.safetensors)? */
bool pcbm_adapter_present(const char *dir);
/* Read and check dir/adapter_config.json into a new adapter (peft_type LORA only: other PEFT
 * methods and LoRA variants that change ΔW, such as DoRA, are refused by name). */
pcbm_status pcbm_adapter_load_config(const char *dir, pcbm_adapter **out, pcbm_error *err);
void pcbm_adapter_free(pcbm_adapter *a);
/* The rank and alpha of module `module` (rank_pattern / alpha_pattern as PEFT matches them: the
 * first key k, in file order, for which the module name matches (.*\.)?(k)$ from its start). */
void pcbm_adapter_rank_alpha(const pcbm_adapter *a, const char *module, unsigned *r, double *alpha);
/* The scale of module `module`: alpha / r, or alpha / sqrt(r) with use_rslora. */
double pcbm_adapter_scale(const pcbm_adapter *a, unsigned r, double alpha);

#endif /* PCBM_ADAPTER_H */
