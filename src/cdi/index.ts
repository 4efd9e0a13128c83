// CDI (Container Device Interface, KEP-3063): spec files in, OCI spec edits out.
export { CdiRegistry, type ResolvedCdi, type RegistrySnapshot } from './registry.js';
export { applyCdiEdits, completeDeviceNodes, type OciSpecForCdi } from './oci-edits.js';
export { requestedCdiDevices, devicesFromAnnotations, parseQualifiedName } from './names.js';
export { parseSpecFile } from './spec-file.js';
export { describeSpecError, type CdiContainerEdits, type CdiSpec, type SpecFileError } from './types.js';
