/* The FMI 2.0 Co-Simulation API over runtime.c. Model Exchange functions return
   fmi2Error: these FMUs are Co-Simulation only. */
#include "fmi2Functions.h"

#include "runtime.h"

#define INSTANCE ((Instance *)c)
#define STATUS(x) ((fmi2Status)(x))

static const char *CATEGORIES[] = {"logStatusWarning", "logStatusError", "logStatusFatal",
                                   "logAll"};

static void log_fmi2(const Instance *instance, ModelStatus status, const char *message) {
    fmi2CallbackLogger logger = (fmi2CallbackLogger)instance->logger;
    const char *category = status >= MODEL_FATAL   ? CATEGORIES[2]
                           : status >= MODEL_ERROR ? CATEGORIES[1]
                           : status >= MODEL_WARNING ? CATEGORIES[0]
                                                     : CATEGORIES[3];
    logger(instance->environment, instance->name, STATUS(status), category, "%s", message);
}

const char *fmi2GetTypesPlatform(void) { return fmi2TypesPlatform; }

const char *fmi2GetVersion(void) { return fmi2Version; }

fmi2Status fmi2SetDebugLogging(fmi2Component c, fmi2Boolean loggingOn, size_t nCategories,
                               const fmi2String categories[]) {
    (void)c;
    (void)loggingOn;
    (void)nCategories;
    (void)categories;
    return fmi2OK; /* errors are always logged; there is nothing more to say */
}

fmi2Component fmi2Instantiate(fmi2String instanceName, fmi2Type fmuType, fmi2String fmuGUID,
                              fmi2String fmuResourceLocation,
                              const fmi2CallbackFunctions *functions, fmi2Boolean visible,
                              fmi2Boolean loggingOn) {
    void *environment = functions != NULL ? functions->componentEnvironment : NULL;
    void (*logger)(void) = functions != NULL ? (void (*)(void))functions->logger : NULL;
    (void)fmuResourceLocation;
    (void)visible;
    (void)loggingOn;
    if (fmuType != fmi2CoSimulation) {
        Instance probe = {0};
        probe.name = (char *)(instanceName != NULL ? instanceName : "");
        probe.environment = environment;
        probe.logger = logger;
        probe.log = log_fmi2;
        runtime_log(&probe, MODEL_ERROR, "instantiate: this FMU is Co-Simulation only");
        return NULL;
    }
    return runtime_instantiate(instanceName, fmuGUID, environment, logger, log_fmi2);
}

void fmi2FreeInstance(fmi2Component c) { runtime_free(INSTANCE); }

fmi2Status fmi2SetupExperiment(fmi2Component c, fmi2Boolean toleranceDefined,
                               fmi2Real tolerance, fmi2Real startTime,
                               fmi2Boolean stopTimeDefined, fmi2Real stopTime) {
    (void)toleranceDefined;
    (void)tolerance;
    (void)stopTimeDefined;
    (void)stopTime;
    if (INSTANCE->phase != PHASE_INSTANTIATED) {
        runtime_log(INSTANCE, MODEL_ERROR, "fmi2SetupExperiment: only before initialization");
        return fmi2Error;
    }
    INSTANCE->data.time = startTime;
    return fmi2OK;
}

fmi2Status fmi2EnterInitializationMode(fmi2Component c) {
    return STATUS(runtime_enter_initialization(INSTANCE, INSTANCE->data.time));
}

fmi2Status fmi2ExitInitializationMode(fmi2Component c) {
    return STATUS(runtime_exit_initialization(INSTANCE));
}

fmi2Status fmi2Terminate(fmi2Component c) {
    INSTANCE->phase = PHASE_TERMINATED;
    return fmi2OK;
}

fmi2Status fmi2Reset(fmi2Component c) {
    runtime_reset(INSTANCE);
    return fmi2OK;
}

fmi2Status fmi2GetReal(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                       fmi2Real value[]) {
    return STATUS(runtime_get_reals(INSTANCE, vr, nvr, value));
}

fmi2Status fmi2GetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          fmi2Integer value[]) {
    (void)vr;
    (void)value;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi2GetInteger"));
}

fmi2Status fmi2GetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          fmi2Boolean value[]) {
    (void)vr;
    (void)value;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi2GetBoolean"));
}

fmi2Status fmi2GetString(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                         fmi2String value[]) {
    (void)vr;
    (void)value;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi2GetString"));
}

fmi2Status fmi2SetReal(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                       const fmi2Real value[]) {
    return STATUS(runtime_set_reals(INSTANCE, vr, nvr, value));
}

fmi2Status fmi2SetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          const fmi2Integer value[]) {
    (void)vr;
    (void)value;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi2SetInteger"));
}

fmi2Status fmi2SetBoolean(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                          const fmi2Boolean value[]) {
    (void)vr;
    (void)value;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi2SetBoolean"));
}

fmi2Status fmi2SetString(fmi2Component c, const fmi2ValueReference vr[], size_t nvr,
                         const fmi2String value[]) {
    (void)vr;
    (void)value;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi2SetString"));
}

fmi2Status fmi2GetFMUstate(fmi2Component c, fmi2FMUstate *FMUstate) {
    return STATUS(runtime_get_state(INSTANCE, FMUstate));
}

fmi2Status fmi2SetFMUstate(fmi2Component c, fmi2FMUstate FMUstate) {
    return STATUS(runtime_set_state(INSTANCE, FMUstate));
}

fmi2Status fmi2FreeFMUstate(fmi2Component c, fmi2FMUstate *FMUstate) {
    return STATUS(runtime_free_state(INSTANCE, FMUstate));
}

fmi2Status fmi2SerializedFMUstateSize(fmi2Component c, fmi2FMUstate FMUstate, size_t *size) {
    (void)c;
    (void)FMUstate;
    *size = runtime_serialized_size();
    return fmi2OK;
}

fmi2Status fmi2SerializeFMUstate(fmi2Component c, fmi2FMUstate FMUstate,
                                 fmi2Byte serializedState[], size_t size) {
    return STATUS(
        runtime_serialize(INSTANCE, FMUstate, (unsigned char *)serializedState, size));
}

fmi2Status fmi2DeSerializeFMUstate(fmi2Component c, const fmi2Byte serializedState[],
                                   size_t size, fmi2FMUstate *FMUstate) {
    return STATUS(runtime_deserialize(INSTANCE, (const unsigned char *)serializedState, size,
                                      FMUstate));
}

fmi2Status fmi2GetDirectionalDerivative(fmi2Component c, const fmi2ValueReference vUnknown_ref[],
                                        size_t nUnknown, const fmi2ValueReference vKnown_ref[],
                                        size_t nKnown, const fmi2Real dvKnown[],
                                        fmi2Real dvUnknown[]) {
    (void)vUnknown_ref;
    (void)nUnknown;
    (void)vKnown_ref;
    (void)nKnown;
    (void)dvKnown;
    (void)dvUnknown;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetDirectionalDerivative"));
}

/* Co-Simulation */

fmi2Status fmi2SetRealInputDerivatives(fmi2Component c, const fmi2ValueReference vr[],
                                       size_t nvr, const fmi2Integer order[],
                                       const fmi2Real value[]) {
    (void)vr;
    (void)nvr;
    (void)order;
    (void)value;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2SetRealInputDerivatives"));
}

fmi2Status fmi2GetRealOutputDerivatives(fmi2Component c, const fmi2ValueReference vr[],
                                        size_t nvr, const fmi2Integer order[],
                                        fmi2Real value[]) {
    (void)vr;
    (void)nvr;
    (void)order;
    (void)value;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetRealOutputDerivatives"));
}

fmi2Status fmi2DoStep(fmi2Component c, fmi2Real currentCommunicationPoint,
                      fmi2Real communicationStepSize,
                      fmi2Boolean noSetFMUStatePriorToCurrentPoint) {
    (void)noSetFMUStatePriorToCurrentPoint;
    return STATUS(runtime_do_step(INSTANCE, currentCommunicationPoint, communicationStepSize));
}

fmi2Status fmi2CancelStep(fmi2Component c) {
    return STATUS(runtime_unsupported(INSTANCE, "fmi2CancelStep"));
}

fmi2Status fmi2GetStatus(fmi2Component c, const fmi2StatusKind s, fmi2Status *value) {
    (void)s;
    (void)value;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetStatus"));
}

fmi2Status fmi2GetRealStatus(fmi2Component c, const fmi2StatusKind s, fmi2Real *value) {
    if (s == fmi2LastSuccessfulTime) {
        *value = INSTANCE->data.time;
        return fmi2OK;
    }
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetRealStatus"));
}

fmi2Status fmi2GetIntegerStatus(fmi2Component c, const fmi2StatusKind s, fmi2Integer *value) {
    (void)s;
    (void)value;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetIntegerStatus"));
}

fmi2Status fmi2GetBooleanStatus(fmi2Component c, const fmi2StatusKind s, fmi2Boolean *value) {
    if (s == fmi2Terminated) {
        *value = INSTANCE->phase == PHASE_FAILED ? fmi2True : fmi2False;
        return fmi2OK;
    }
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetBooleanStatus"));
}

fmi2Status fmi2GetStringStatus(fmi2Component c, const fmi2StatusKind s, fmi2String *value) {
    (void)s;
    (void)value;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetStringStatus"));
}

/* Model Exchange: not provided */

fmi2Status fmi2EnterEventMode(fmi2Component c) {
    return STATUS(runtime_unsupported(INSTANCE, "fmi2EnterEventMode"));
}

fmi2Status fmi2NewDiscreteStates(fmi2Component c, fmi2EventInfo *eventInfo) {
    (void)eventInfo;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2NewDiscreteStates"));
}

fmi2Status fmi2EnterContinuousTimeMode(fmi2Component c) {
    return STATUS(runtime_unsupported(INSTANCE, "fmi2EnterContinuousTimeMode"));
}

fmi2Status fmi2CompletedIntegratorStep(fmi2Component c,
                                       fmi2Boolean noSetFMUStatePriorToCurrentPoint,
                                       fmi2Boolean *enterEventMode,
                                       fmi2Boolean *terminateSimulation) {
    (void)noSetFMUStatePriorToCurrentPoint;
    (void)enterEventMode;
    (void)terminateSimulation;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2CompletedIntegratorStep"));
}

fmi2Status fmi2SetTime(fmi2Component c, fmi2Real time) {
    (void)time;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2SetTime"));
}

fmi2Status fmi2SetContinuousStates(fmi2Component c, const fmi2Real x[], size_t nx) {
    (void)x;
    (void)nx;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2SetContinuousStates"));
}

fmi2Status fmi2GetDerivatives(fmi2Component c, fmi2Real derivatives[], size_t nx) {
    (void)derivatives;
    (void)nx;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetDerivatives"));
}

fmi2Status fmi2GetEventIndicators(fmi2Component c, fmi2Real eventIndicators[], size_t ni) {
    (void)eventIndicators;
    (void)ni;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetEventIndicators"));
}

fmi2Status fmi2GetContinuousStates(fmi2Component c, fmi2Real x[], size_t nx) {
    (void)x;
    (void)nx;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetContinuousStates"));
}

fmi2Status fmi2GetNominalsOfContinuousStates(fmi2Component c, fmi2Real x_nominal[],
                                             size_t nx) {
    (void)x_nominal;
    (void)nx;
    return STATUS(runtime_unsupported(INSTANCE, "fmi2GetNominalsOfContinuousStates"));
}
