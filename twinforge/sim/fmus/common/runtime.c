#include "runtime.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A serialized state: this header, then the ModelData. The guid ties it to one model, the
   size to one build of its variable table. */
typedef struct {
    char guid[64];
    unsigned long long size;
} StateHeader;

double model_lag(double x, double target, double dt, double tau) {
    if (tau <= 0.0) {
        return target;
    }
    return target + (x - target) * exp(-dt / tau);
}

void runtime_log(const Instance *instance, ModelStatus status, const char *format, ...) {
    char message[512];
    va_list args;
    if (instance->log == NULL || instance->logger == NULL) {
        return;
    }
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    instance->log(instance, status, message);
}

static void load_start_values(ModelData *data) {
    size_t i;
    memset(data, 0, sizeof *data);
    for (i = 0; i < model_info.n_values; i++) {
        data->values[i] = model_info.variables[i].start;
    }
}

Instance *runtime_instantiate(const char *name, const char *guid, void *environment,
                              void (*logger)(void), LogFunction log) {
    Instance probe;
    Instance *instance;
    const char *instance_name = name != NULL ? name : "";
    memset(&probe, 0, sizeof probe);
    probe.name = (char *)instance_name;
    probe.environment = environment;
    probe.logger = logger;
    probe.log = log;
    if (guid == NULL || strcmp(guid, model_info.guid) != 0) {
        runtime_log(&probe, MODEL_ERROR, "instantiate: guid %s does not match the model's %s",
                    guid != NULL ? guid : "(null)", model_info.guid);
        return NULL;
    }
    if (model_info.n_values > MODEL_MAX_VALUES) {
        runtime_log(&probe, MODEL_ERROR, "instantiate: the model has more than %d values",
                    MODEL_MAX_VALUES);
        return NULL;
    }
    instance = calloc(1, sizeof *instance);
    if (instance == NULL) {
        return NULL;
    }
    *instance = probe;
    instance->name = malloc(strlen(instance_name) + 1);
    if (instance->name == NULL) {
        free(instance);
        return NULL;
    }
    strcpy(instance->name, instance_name);
    runtime_reset(instance);
    return instance;
}

void runtime_free(Instance *instance) {
    if (instance != NULL) {
        free(instance->name);
        free(instance);
    }
}

void runtime_reset(Instance *instance) {
    load_start_values(&instance->data);
    instance->phase = PHASE_INSTANTIATED;
}

ModelStatus runtime_enter_initialization(Instance *instance, double start_time) {
    if (instance->phase != PHASE_INSTANTIATED) {
        runtime_log(instance, MODEL_ERROR, "enterInitializationMode: only right after "
                                           "instantiate or reset");
        return MODEL_ERROR;
    }
    instance->data.time = start_time;
    instance->phase = PHASE_INITIALIZATION;
    return MODEL_OK;
}

ModelStatus runtime_exit_initialization(Instance *instance) {
    if (instance->phase != PHASE_INITIALIZATION) {
        runtime_log(instance, MODEL_ERROR, "exitInitializationMode: not in initialization mode");
        return MODEL_ERROR;
    }
    model_initialize(&instance->data);
    instance->phase = PHASE_STEPPING;
    return MODEL_OK;
}

static const ModelVariable *lookup(Instance *instance, unsigned int vr, const char *function) {
    if (vr >= model_info.n_values || model_info.variables[vr].kind == KIND_INTERNAL) {
        runtime_log(instance, MODEL_ERROR, "%s: unknown value reference %u", function, vr);
        return NULL;
    }
    return &model_info.variables[vr];
}

ModelStatus runtime_get_reals(Instance *instance, const unsigned int vr[], size_t n,
                              double values[]) {
    size_t i;
    for (i = 0; i < n; i++) {
        const ModelVariable *v = lookup(instance, vr[i], "getReal");
        if (v == NULL) {
            return MODEL_ERROR;
        }
        values[i] = v->kind == KIND_INDEPENDENT ? instance->data.time : instance->data.values[vr[i]];
    }
    return MODEL_OK;
}

ModelStatus runtime_set_reals(Instance *instance, const unsigned int vr[], size_t n,
                              const double values[]) {
    size_t i;
    ModelStatus status = MODEL_OK;
    if (instance->phase == PHASE_FAILED || instance->phase == PHASE_TERMINATED) {
        runtime_log(instance, MODEL_ERROR, "setReal: the instance has failed or terminated");
        return MODEL_ERROR;
    }
    /* Check all before writing any, so a rejected call changes nothing. */
    for (i = 0; i < n; i++) {
        const ModelVariable *v = lookup(instance, vr[i], "setReal");
        if (v == NULL) {
            return MODEL_ERROR;
        }
        if (v->kind == KIND_OUTPUT || v->kind == KIND_INDEPENDENT) {
            runtime_log(instance, MODEL_ERROR, "setReal: %s is %s and cannot be set", v->name,
                        v->kind == KIND_OUTPUT ? "an output" : "the time");
            return MODEL_ERROR;
        }
        if (isnan(values[i])) {
            runtime_log(instance, MODEL_ERROR, "setReal: %s is nan", v->name);
            return MODEL_ERROR;
        }
        /* A parameter out of range is a configuration mistake; an input out of range is
           usually a noisy measurement, clamped below. */
        if (v->kind == KIND_PARAMETER && !(values[i] >= v->min && values[i] <= v->max)) {
            runtime_log(instance, MODEL_ERROR, "setReal: %s = %g is outside [%g, %g]", v->name,
                        values[i], v->min, v->max);
            return MODEL_ERROR;
        }
    }
    for (i = 0; i < n; i++) {
        const ModelVariable *v = &model_info.variables[vr[i]];
        double value = values[i] < v->min ? v->min : (values[i] > v->max ? v->max : values[i]);
        if (value != values[i]) {
            runtime_log(instance, MODEL_WARNING, "setReal: %s = %g clamped to [%g, %g]", v->name,
                        values[i], v->min, v->max);
            status = MODEL_WARNING;
        }
        instance->data.values[vr[i]] = value;
    }
    return status;
}

ModelStatus runtime_no_variables(Instance *instance, size_t n, const char *function) {
    if (n == 0) {
        return MODEL_OK;
    }
    runtime_log(instance, MODEL_ERROR, "%s: the model has no variables of this type", function);
    return MODEL_ERROR;
}

ModelStatus runtime_do_step(Instance *instance, double t, double dt) {
    const char *message = "";
    ModelStatus status;
    if (instance->phase != PHASE_STEPPING) {
        runtime_log(instance, MODEL_ERROR, "doStep: the instance is not initialized or has failed");
        return MODEL_ERROR;
    }
    if (!(dt > 0.0) || !isfinite(t)) {
        runtime_log(instance, MODEL_ERROR, "doStep: step size %g at t=%g is not positive", dt, t);
        return MODEL_ERROR;
    }
    status = model_step(&instance->data, t, dt, &message);
    if (status > MODEL_WARNING) {
        instance->phase = PHASE_FAILED;
        runtime_log(instance, status, "doStep at t=%g: %s", t, message);
        return status;
    }
    instance->data.time = t + dt;
    return status;
}

ModelStatus runtime_unsupported(Instance *instance, const char *function) {
    runtime_log(instance, MODEL_ERROR, "%s: not supported by this Co-Simulation FMU", function);
    return MODEL_ERROR;
}

ModelStatus runtime_get_state(Instance *instance, void **state) {
    if (*state == NULL) {
        *state = malloc(sizeof(ModelData));
        if (*state == NULL) {
            return MODEL_ERROR;
        }
    }
    memcpy(*state, &instance->data, sizeof(ModelData));
    return MODEL_OK;
}

ModelStatus runtime_set_state(Instance *instance, const void *state) {
    if (state == NULL) {
        runtime_log(instance, MODEL_ERROR, "setFMUstate: no state given");
        return MODEL_ERROR;
    }
    memcpy(&instance->data, state, sizeof(ModelData));
    instance->phase = PHASE_STEPPING;
    return MODEL_OK;
}

ModelStatus runtime_free_state(Instance *instance, void **state) {
    (void)instance;
    free(*state);
    *state = NULL;
    return MODEL_OK;
}

size_t runtime_serialized_size(void) { return sizeof(StateHeader) + sizeof(ModelData); }

ModelStatus runtime_serialize(Instance *instance, const void *state, unsigned char out[],
                              size_t size) {
    StateHeader header;
    if (state == NULL || size < runtime_serialized_size()) {
        runtime_log(instance, MODEL_ERROR, "serializeFMUstate: buffer of %lu bytes, need %lu",
                    (unsigned long)size, (unsigned long)runtime_serialized_size());
        return MODEL_ERROR;
    }
    memset(&header, 0, sizeof header);
    strncpy(header.guid, model_info.guid, sizeof header.guid - 1);
    header.size = sizeof(ModelData);
    memcpy(out, &header, sizeof header);
    memcpy(out + sizeof header, state, sizeof(ModelData));
    return MODEL_OK;
}

ModelStatus runtime_deserialize(Instance *instance, const unsigned char in[], size_t size,
                                void **state) {
    StateHeader header;
    if (size != runtime_serialized_size()) {
        runtime_log(instance, MODEL_ERROR, "deserializeFMUstate: %lu bytes, expected %lu",
                    (unsigned long)size, (unsigned long)runtime_serialized_size());
        return MODEL_ERROR;
    }
    memcpy(&header, in, sizeof header);
    header.guid[sizeof header.guid - 1] = '\0';
    if (strcmp(header.guid, model_info.guid) != 0 || header.size != sizeof(ModelData)) {
        runtime_log(instance, MODEL_ERROR, "deserializeFMUstate: the state is of model %s",
                    header.guid);
        return MODEL_ERROR;
    }
    if (*state == NULL) {
        *state = malloc(sizeof(ModelData));
        if (*state == NULL) {
            return MODEL_ERROR;
        }
    }
    memcpy(*state, in + sizeof header, sizeof(ModelData));
    return MODEL_OK;
}
