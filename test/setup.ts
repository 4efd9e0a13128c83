// Runs in every test file: whatever scratch dir a file made and did not remove goes after its last test
// (this hook is registered first, so it runs after the file's own afterAll hooks have stopped its daemons).
import { afterAll } from 'vitest';
import { removeLeftoverScratchDirs } from './helpers/daemon.js';

afterAll(removeLeftoverScratchDirs);
