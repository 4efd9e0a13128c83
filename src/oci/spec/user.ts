// Resolving who a container runs as, from the security context or the image's USER, with the image's
// /etc/passwd and /etc/group (pure parsing here; resolve.ts reads the files).
import type { LinuxContainerSecurityContext__Output } from '../../gen/runtime/v1/LinuxContainerSecurityContext.js';
import type { ResolvedUser } from './input.js';
import { invalidArgument } from '../../errors.js';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}
export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || line.startsWith('#')) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (Number.isInteger(uid) && Number.isInteger(gid)) out.push({ name: f[0], uid, gid, home: f[5] });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || line.startsWith('#')) continue;
    const gid = Number(f[2]);
    if (Number.isInteger(gid)) out.push({ name: f[0], gid, members: f[3].split(',').filter(Boolean) });
  }
  return out;
}

const isNumeric = (s: string) => /^\d+$/.test(s);

/**
 * Who runs the process. Precedence as kubelet/containerd: run_as_user / run_as_username, else the image
 * USER ("name", "uid", "name:group", "uid:gid"). run_as_group overrides the group. The groups that list
 * the user by name in /etc/group are added to the supplemental groups, then the request's own.
 */
export function resolveUser(
  sc: LinuxContainerSecurityContext__Output | null | undefined,
  imageUser: string | undefined,
  passwd: PasswdEntry[],
  groups: GroupEntry[],
): ResolvedUser {
  let userPart: string;
  let groupPart: string | undefined;
  if (sc?.run_as_user) userPart = sc.run_as_user.value;
  else if (sc?.run_as_username) userPart = sc.run_as_username;
  else {
    const [u, g] = (imageUser ?? '').split(':', 2);
    userPart = u || '0';
    groupPart = g || undefined;
  }
  let uid: number;
  let gid: number;
  let name: string | undefined;
  let home: string | undefined;
  if (isNumeric(userPart)) {
    uid = Number(userPart);
    const entry = passwd.find((p) => p.uid === uid);
    gid = entry?.gid ?? 0;
    name = entry?.name;
    home = entry?.home;
  } else {
    const entry = passwd.find((p) => p.name === userPart);
    if (!entry) throw invalidArgument(`user "${userPart}" not found in the image's /etc/passwd`, { user: userPart });
    ({ uid, gid, name, home } = entry);
  }
  if (groupPart !== undefined) {
    if (isNumeric(groupPart)) gid = Number(groupPart);
    else {
      const g = groups.find((e) => e.name === groupPart);
      if (!g) throw invalidArgument(`group "${groupPart}" not found in the image's /etc/group`, { group: groupPart });
      gid = g.gid;
    }
  }
  if (sc?.run_as_group) gid = Number(sc.run_as_group.value);
  const additional: number[] = [];
  if (name !== undefined) for (const g of groups) if (g.members.includes(name)) additional.push(g.gid);
  for (const g of sc?.supplemental_groups ?? []) additional.push(Number(g));
  return { uid, gid, additionalGids: [...new Set(additional)], home };
}
