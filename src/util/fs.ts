// Small file-system questions shared by several modules.
import { access } from 'node:fs/promises';

/** True when the path exists (anything access(2) can see); never throws. */
export async function pathExists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
