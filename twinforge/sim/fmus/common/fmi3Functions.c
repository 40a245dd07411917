/* The FMI 3.0 Co-Simulation API over runtime.c: Float64 variables only; every other
   type, Model Exchange, Scheduled Execution, clocks and derivatives return fmi3Error. */
#include "fmi3Functions.h"

#include "runtime.h"

#define INSTANCE ((Instance *)instance)
#define STATUS(x) ((fmi3Status)(x))

static void log_fmi3(const Instance *instance, ModelStatus status, const char *message) {
    fmi3LogMessageCallback logger = (fmi3LogMessageCallback)instance->logger;
    const char *category = status >= MODEL_ERROR ? "logStatusError" : "logEvents";
    logger(instance->environment, STATUS(status), category, message);
}

/* A getter and a setter that only accept empty requests: the models have no variables
   of these types. */
#define NO_VARIABLES(Type, CType)                                                          \
    fmi3Status fmi3Get##Type(fmi3Instance instance, const fmi3ValueReference vr[],         \
                             size_t nvr, CType values[], size_t nValues) {                 \
        (void)vr;                                                                          \
        (void)values;                                                                      \
        (void)nValues;                                                                     \
        return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi3Get" #Type));              \
    }                                                                                      \
    fmi3Status fmi3Set##Type(fmi3Instance instance, const fmi3ValueReference vr[],         \
                             size_t nvr, const CType values[], size_t nValues) {           \
        (void)vr;                                                                          \
        (void)values;                                                                      \
        (void)nValues;                                                                     \
        return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi3Set" #Type));              \
    }

NO_VARIABLES(Float32, fmi3Float32)
NO_VARIABLES(Int8, fmi3Int8)
NO_VARIABLES(UInt8, fmi3UInt8)
NO_VARIABLES(Int16, fmi3Int16)
NO_VARIABLES(UInt16, fmi3UInt16)
NO_VARIABLES(Int32, fmi3Int32)
NO_VARIABLES(UInt32, fmi3UInt32)
NO_VARIABLES(Int64, fmi3Int64)
NO_VARIABLES(UInt64, fmi3UInt64)
NO_VARIABLES(Boolean, fmi3Boolean)
NO_VARIABLES(String, fmi3String)

#define UNSUPPORTED(name) return STATUS(runtime_unsupported(INSTANCE, #name))

const char *fmi3GetVersion(void) { return fmi3Version; }

fmi3Status fmi3SetDebugLogging(fmi3Instance instance, fmi3Boolean loggingOn,
                               size_t nCategories, const fmi3String categories[]) {
    (void)instance;
    (void)loggingOn;
    (void)nCategories;
    (void)categories;
    return fmi3OK; /* errors are always logged; there is nothing more to say */
}

fmi3Instance fmi3InstantiateModelExchange(fmi3String instanceName,
                                          fmi3String instantiationToken,
                                          fmi3String resourcePath, fmi3Boolean visible,
                                          fmi3Boolean loggingOn,
                                          fmi3InstanceEnvironment instanceEnvironment,
                                          fmi3LogMessageCallback logMessage) {
    (void)instanceName;
    (void)instantiationToken;
    (void)resourcePath;
    (void)visible;
    (void)loggingOn;
    (void)instanceEnvironment;
    (void)logMessage;
    return NULL;
}

fmi3Instance fmi3InstantiateCoSimulation(
    fmi3String instanceName, fmi3String instantiationToken, fmi3String resourcePath,
    fmi3Boolean visible, fmi3Boolean loggingOn, fmi3Boolean eventModeUsed,
    fmi3Boolean earlyReturnAllowed, const fmi3ValueReference requiredIntermediateVariables[],
    size_t nRequiredIntermediateVariables, fmi3InstanceEnvironment instanceEnvironment,
    fmi3LogMessageCallback logMessage, fmi3IntermediateUpdateCallback intermediateUpdate) {
    (void)resourcePath;
    (void)visible;
    (void)loggingOn;
    (void)eventModeUsed;
    (void)earlyReturnAllowed;
    (void)requiredIntermediateVariables;
    (void)nRequiredIntermediateVariables;
    (void)intermediateUpdate;
    return runtime_instantiate(instanceName, instantiationToken, instanceEnvironment,
                               (void (*)(void))logMessage, log_fmi3);
}

fmi3Instance fmi3InstantiateScheduledExecution(
    fmi3String instanceName, fmi3String instantiationToken, fmi3String resourcePath,
    fmi3Boolean visible, fmi3Boolean loggingOn, fmi3InstanceEnvironment instanceEnvironment,
    fmi3LogMessageCallback logMessage, fmi3ClockUpdateCallback clockUpdate,
    fmi3LockPreemptionCallback lockPreemption, fmi3UnlockPreemptionCallback unlockPreemption) {
    (void)instanceName;
    (void)instantiationToken;
    (void)resourcePath;
    (void)visible;
    (void)loggingOn;
    (void)instanceEnvironment;
    (void)logMessage;
    (void)clockUpdate;
    (void)lockPreemption;
    (void)unlockPreemption;
    return NULL;
}

void fmi3FreeInstance(fmi3Instance instance) { runtime_free(INSTANCE); }

fmi3Status fmi3EnterInitializationMode(fmi3Instance instance, fmi3Boolean toleranceDefined,
                                       fmi3Float64 tolerance, fmi3Float64 startTime,
                                       fmi3Boolean stopTimeDefined, fmi3Float64 stopTime) {
    (void)toleranceDefined;
    (void)tolerance;
    (void)stopTimeDefined;
    (void)stopTime;
    return STATUS(runtime_enter_initialization(INSTANCE, startTime));
}

fmi3Status fmi3ExitInitializationMode(fmi3Instance instance) {
    return STATUS(runtime_exit_initialization(INSTANCE));
}

fmi3Status fmi3EnterEventMode(fmi3Instance instance) { UNSUPPORTED(fmi3EnterEventMode); }

fmi3Status fmi3Terminate(fmi3Instance instance) {
    INSTANCE->phase = PHASE_TERMINATED;
    return fmi3OK;
}

fmi3Status fmi3Reset(fmi3Instance instance) {
    runtime_reset(INSTANCE);
    return fmi3OK;
}

fmi3Status fmi3GetFloat64(fmi3Instance instance, const fmi3ValueReference vr[], size_t nvr,
                          fmi3Float64 values[], size_t nValues) {
    if (nValues != nvr) {
        runtime_log(INSTANCE, MODEL_ERROR, "fmi3GetFloat64: %lu values for %lu references",
                    (unsigned long)nValues, (unsigned long)nvr);
        return fmi3Error;
    }
    return STATUS(runtime_get_reals(INSTANCE, vr, nvr, values));
}

fmi3Status fmi3SetFloat64(fmi3Instance instance, const fmi3ValueReference vr[], size_t nvr,
                          const fmi3Float64 values[], size_t nValues) {
    if (nValues != nvr) {
        runtime_log(INSTANCE, MODEL_ERROR, "fmi3SetFloat64: %lu values for %lu references",
                    (unsigned long)nValues, (unsigned long)nvr);
        return fmi3Error;
    }
    return STATUS(runtime_set_reals(INSTANCE, vr, nvr, values));
}

fmi3Status fmi3GetBinary(fmi3Instance instance, const fmi3ValueReference vr[], size_t nvr,
                         size_t valueSizes[], fmi3Binary values[], size_t nValues) {
    (void)vr;
    (void)valueSizes;
    (void)values;
    (void)nValues;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi3GetBinary"));
}

fmi3Status fmi3SetBinary(fmi3Instance instance, const fmi3ValueReference vr[], size_t nvr,
                         const size_t valueSizes[], const fmi3Binary values[],
                         size_t nValues) {
    (void)vr;
    (void)valueSizes;
    (void)values;
    (void)nValues;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi3SetBinary"));
}

fmi3Status fmi3GetClock(fmi3Instance instance, const fmi3ValueReference vr[], size_t nvr,
                        fmi3Clock values[]) {
    (void)vr;
    (void)values;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi3GetClock"));
}

fmi3Status fmi3SetClock(fmi3Instance instance, const fmi3ValueReference vr[], size_t nvr,
                        const fmi3Clock values[]) {
    (void)vr;
    (void)values;
    return STATUS(runtime_no_variables(INSTANCE, nvr, "fmi3SetClock"));
}

fmi3Status fmi3GetNumberOfVariableDependencies(fmi3Instance instance,
                                               fmi3ValueReference valueReference,
                                               size_t *nDependencies) {
    (void)valueReference;
    (void)nDependencies;
    UNSUPPORTED(fmi3GetNumberOfVariableDependencies);
}

fmi3Status fmi3GetVariableDependencies(fmi3Instance instance, fmi3ValueReference dependent,
                                       size_t elementIndicesOfDependent[],
                                       fmi3ValueReference independents[],
                                       size_t elementIndicesOfIndependents[],
                                       fmi3DependencyKind dependencyKinds[],
                                       size_t nDependencies) {
    (void)dependent;
    (void)elementIndicesOfDependent;
    (void)independents;
    (void)elementIndicesOfIndependents;
    (void)dependencyKinds;
    (void)nDependencies;
    UNSUPPORTED(fmi3GetVariableDependencies);
}

fmi3Status fmi3GetFMUState(fmi3Instance instance, fmi3FMUState *FMUState) {
    return STATUS(runtime_get_state(INSTANCE, FMUState));
}

fmi3Status fmi3SetFMUState(fmi3Instance instance, fmi3FMUState FMUState) {
    return STATUS(runtime_set_state(INSTANCE, FMUState));
}

fmi3Status fmi3FreeFMUState(fmi3Instance instance, fmi3FMUState *FMUState) {
    return STATUS(runtime_free_state(INSTANCE, FMUState));
}

fmi3Status fmi3SerializedFMUStateSize(fmi3Instance instance, fmi3FMUState FMUState,
                                      size_t *size) {
    (void)instance;
    (void)FMUState;
    *size = runtime_serialized_size();
    return fmi3OK;
}

fmi3Status fmi3SerializeFMUState(fmi3Instance instance, fmi3FMUState FMUState,
                                 fmi3Byte serializedState[], size_t size) {
    return STATUS(runtime_serialize(INSTANCE, FMUState, serializedState, size));
}

fmi3Status fmi3DeserializeFMUState(fmi3Instance instance, const fmi3Byte serializedState[],
                                   size_t size, fmi3FMUState *FMUState) {
    return STATUS(runtime_deserialize(INSTANCE, serializedState, size, FMUState));
}

fmi3Status fmi3GetDirectionalDerivative(fmi3Instance instance,
                                        const fmi3ValueReference unknowns[], size_t nUnknowns,
                                        const fmi3ValueReference knowns[], size_t nKnowns,
                                        const fmi3Float64 seed[], size_t nSeed,
                                        fmi3Float64 sensitivity[], size_t nSensitivity) {
    (void)unknowns;
    (void)nUnknowns;
    (void)knowns;
    (void)nKnowns;
    (void)seed;
    (void)nSeed;
    (void)sensitivity;
    (void)nSensitivity;
    UNSUPPORTED(fmi3GetDirectionalDerivative);
}

fmi3Status fmi3GetAdjointDerivative(fmi3Instance instance, const fmi3ValueReference unknowns[],
                                    size_t nUnknowns, const fmi3ValueReference knowns[],
                                    size_t nKnowns, const fmi3Float64 seed[], size_t nSeed,
                                    fmi3Float64 sensitivity[], size_t nSensitivity) {
    (void)unknowns;
    (void)nUnknowns;
    (void)knowns;
    (void)nKnowns;
    (void)seed;
    (void)nSeed;
    (void)sensitivity;
    (void)nSensitivity;
    UNSUPPORTED(fmi3GetAdjointDerivative);
}

fmi3Status fmi3EnterConfigurationMode(fmi3Instance instance) {
    UNSUPPORTED(fmi3EnterConfigurationMode);
}

fmi3Status fmi3ExitConfigurationMode(fmi3Instance instance) {
    UNSUPPORTED(fmi3ExitConfigurationMode);
}

fmi3Status fmi3GetIntervalDecimal(fmi3Instance instance, const fmi3ValueReference vr[],
                                  size_t nvr, fmi3Float64 intervals[],
                                  fmi3IntervalQualifier qualifiers[]) {
    (void)vr;
    (void)nvr;
    (void)intervals;
    (void)qualifiers;
    UNSUPPORTED(fmi3GetIntervalDecimal);
}

fmi3Status fmi3GetIntervalFraction(fmi3Instance instance, const fmi3ValueReference vr[],
                                   size_t nvr, fmi3UInt64 counters[], fmi3UInt64 resolutions[],
                                   fmi3IntervalQualifier qualifiers[]) {
    (void)vr;
    (void)nvr;
    (void)counters;
    (void)resolutions;
    (void)qualifiers;
    UNSUPPORTED(fmi3GetIntervalFraction);
}

fmi3Status fmi3GetShiftDecimal(fmi3Instance instance, const fmi3ValueReference vr[],
                               size_t nvr, fmi3Float64 shifts[]) {
    (void)vr;
    (void)nvr;
    (void)shifts;
    UNSUPPORTED(fmi3GetShiftDecimal);
}

fmi3Status fmi3GetShiftFraction(fmi3Instance instance, const fmi3ValueReference vr[],
                                size_t nvr, fmi3UInt64 counters[], fmi3UInt64 resolutions[]) {
    (void)vr;
    (void)nvr;
    (void)counters;
    (void)resolutions;
    UNSUPPORTED(fmi3GetShiftFraction);
}

fmi3Status fmi3SetIntervalDecimal(fmi3Instance instance, const fmi3ValueReference vr[],
                                  size_t nvr, const fmi3Float64 intervals[]) {
    (void)vr;
    (void)nvr;
    (void)intervals;
    UNSUPPORTED(fmi3SetIntervalDecimal);
}

fmi3Status fmi3SetIntervalFraction(fmi3Instance instance, const fmi3ValueReference vr[],
                                   size_t nvr, const fmi3UInt64 counters[],
                                   const fmi3UInt64 resolutions[]) {
    (void)vr;
    (void)nvr;
    (void)counters;
    (void)resolutions;
    UNSUPPORTED(fmi3SetIntervalFraction);
}

fmi3Status fmi3SetShiftDecimal(fmi3Instance instance, const fmi3ValueReference vr[],
                               size_t nvr, const fmi3Float64 shifts[]) {
    (void)vr;
    (void)nvr;
    (void)shifts;
    UNSUPPORTED(fmi3SetShiftDecimal);
}

fmi3Status fmi3SetShiftFraction(fmi3Instance instance, const fmi3ValueReference vr[],
                                size_t nvr, const fmi3UInt64 counters[],
                                const fmi3UInt64 resolutions[]) {
    (void)vr;
    (void)nvr;
    (void)counters;
    (void)resolutions;
    UNSUPPORTED(fmi3SetShiftFraction);
}

fmi3Status fmi3EvaluateDiscreteStates(fmi3Instance instance) {
    UNSUPPORTED(fmi3EvaluateDiscreteStates);
}

fmi3Status fmi3UpdateDiscreteStates(fmi3Instance instance,
                                    fmi3Boolean *discreteStatesNeedUpdate,
                                    fmi3Boolean *terminateSimulation,
                                    fmi3Boolean *nominalsOfContinuousStatesChanged,
                                    fmi3Boolean *valuesOfContinuousStatesChanged,
                                    fmi3Boolean *nextEventTimeDefined,
                                    fmi3Float64 *nextEventTime) {
    (void)discreteStatesNeedUpdate;
    (void)terminateSimulation;
    (void)nominalsOfContinuousStatesChanged;
    (void)valuesOfContinuousStatesChanged;
    (void)nextEventTimeDefined;
    (void)nextEventTime;
    UNSUPPORTED(fmi3UpdateDiscreteStates);
}

/* Model Exchange: not provided */

fmi3Status fmi3EnterContinuousTimeMode(fmi3Instance instance) {
    UNSUPPORTED(fmi3EnterContinuousTimeMode);
}

fmi3Status fmi3CompletedIntegratorStep(fmi3Instance instance,
                                       fmi3Boolean noSetFMUStatePriorToCurrentPoint,
                                       fmi3Boolean *enterEventMode,
                                       fmi3Boolean *terminateSimulation) {
    (void)noSetFMUStatePriorToCurrentPoint;
    (void)enterEventMode;
    (void)terminateSimulation;
    UNSUPPORTED(fmi3CompletedIntegratorStep);
}

fmi3Status fmi3SetTime(fmi3Instance instance, fmi3Float64 time) {
    (void)time;
    UNSUPPORTED(fmi3SetTime);
}

fmi3Status fmi3SetContinuousStates(fmi3Instance instance, const fmi3Float64 continuousStates[],
                                   size_t nContinuousStates) {
    (void)continuousStates;
    (void)nContinuousStates;
    UNSUPPORTED(fmi3SetContinuousStates);
}

fmi3Status fmi3GetContinuousStateDerivatives(fmi3Instance instance, fmi3Float64 derivatives[],
                                             size_t nContinuousStates) {
    (void)derivatives;
    (void)nContinuousStates;
    UNSUPPORTED(fmi3GetContinuousStateDerivatives);
}

fmi3Status fmi3GetEventIndicators(fmi3Instance instance, fmi3Float64 eventIndicators[],
                                  size_t nEventIndicators) {
    (void)eventIndicators;
    (void)nEventIndicators;
    UNSUPPORTED(fmi3GetEventIndicators);
}

fmi3Status fmi3GetContinuousStates(fmi3Instance instance, fmi3Float64 continuousStates[],
                                   size_t nContinuousStates) {
    (void)continuousStates;
    (void)nContinuousStates;
    UNSUPPORTED(fmi3GetContinuousStates);
}

fmi3Status fmi3GetNominalsOfContinuousStates(fmi3Instance instance, fmi3Float64 nominals[],
                                             size_t nContinuousStates) {
    (void)nominals;
    (void)nContinuousStates;
    UNSUPPORTED(fmi3GetNominalsOfContinuousStates);
}

fmi3Status fmi3GetNumberOfEventIndicators(fmi3Instance instance, size_t *nEventIndicators) {
    (void)nEventIndicators;
    UNSUPPORTED(fmi3GetNumberOfEventIndicators);
}

fmi3Status fmi3GetNumberOfContinuousStates(fmi3Instance instance, size_t *nContinuousStates) {
    (void)nContinuousStates;
    UNSUPPORTED(fmi3GetNumberOfContinuousStates);
}

/* Co-Simulation */

fmi3Status fmi3EnterStepMode(fmi3Instance instance) {
    (void)instance;
    return fmi3OK; /* step mode follows initialization directly: event mode is not used */
}

fmi3Status fmi3GetOutputDerivatives(fmi3Instance instance, const fmi3ValueReference vr[],
                                    size_t nvr, const fmi3Int32 orders[], fmi3Float64 values[],
                                    size_t nValues) {
    (void)vr;
    (void)nvr;
    (void)orders;
    (void)values;
    (void)nValues;
    UNSUPPORTED(fmi3GetOutputDerivatives);
}

fmi3Status fmi3DoStep(fmi3Instance instance, fmi3Float64 currentCommunicationPoint,
                      fmi3Float64 communicationStepSize,
                      fmi3Boolean noSetFMUStatePriorToCurrentPoint,
                      fmi3Boolean *eventHandlingNeeded, fmi3Boolean *terminateSimulation,
                      fmi3Boolean *earlyReturn, fmi3Float64 *lastSuccessfulTime) {
    ModelStatus status;
    (void)noSetFMUStatePriorToCurrentPoint;
    status = runtime_do_step(INSTANCE, currentCommunicationPoint, communicationStepSize);
    *eventHandlingNeeded = fmi3False;
    *terminateSimulation = status >= MODEL_ERROR ? fmi3True : fmi3False;
    *earlyReturn = fmi3False;
    *lastSuccessfulTime = INSTANCE->data.time;
    return STATUS(status);
}

fmi3Status fmi3ActivateModelPartition(fmi3Instance instance, fmi3ValueReference clockReference,
                                      fmi3Float64 activationTime) {
    (void)clockReference;
    (void)activationTime;
    UNSUPPORTED(fmi3ActivateModelPartition);
}
