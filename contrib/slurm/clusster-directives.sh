# shellcheck shell=bash
# clusster-directives.sh: the #CLUSSTER directives and the site config, for prolog.sh, epilog.sh,
# task-prolog.sh and contrib/hooks/clusster-job-wrapper (sourced, bash 4+). The same grammar as
# contrib/slurm/burst_buffer.lua; docs/staging.md describes both.
#
# Directives, in the leading comment block of a job script (up to the first line that is
# neither blank nor a comment):
#   #CLUSSTER stage_in  NS/NAME[@TAG|@VERSION-ID] DEST
#   #CLUSSTER stage_out SRC NS/NAME [--tag T] [--rule "2 copies on tier=hpc"]
# also accepted behind #BB_LUA (`#BB_LUA clusster stage_in ...`); a bare `#BB_LUA clusster`
# is a marker for the burst-buffer plugin and does nothing here.
# Words split at blanks; '...' and "..." quote (nothing special inside), \ outside quotes takes
# the next character; then $NAME / ${NAME} are replaced in every word ($$ is a $), from
# CL_VARS (and, with CL_USE_ENV=1, this process's environment). An unknown name is an error.
# Nothing in a directive is ever evaluated by a shell.
#
# The site config ($CLUSSTER_SLURM_CONF, else /etc/clusster/slurm.conf), KEY = VALUE lines:
#   endpoint             the site daemon's admin URL, http://host:port or https://host:port
#                        (its [admin] tls_listen) (required)
#   ca_file              for https: the CA of the daemon's certificate (default: the system's)
#   token_file           a file holding a stage-scoped token (keep it root's, 0600), or
#   token                the token itself (then keep this file 0600)
#   clusster             the CLI (default: clusster, found in `path`)
#   path                 PATH for the CLI (default /usr/local/sbin:...:/bin)
#   state_dir            per-job state (default /var/spool/clusster-slurm)
#   log_dir              per-job logs, <log_dir>/<job id>.log (default /var/log/clusster-slurm)
#   stage_in_timeout     stage-in --timeout (default 1h)
#   pin_for              stage-in --pin-for (default 24h)
#   stage_out_on_failure yes: stage out even when the job failed (default no)
#   on_stage_in_failure  prolog only: cancel (default: the job is cancelled, the node stays up)
#                        or drain (the prolog fails: Slurm drains the node, requeues the job)
#   env.NAME             a variable for directives, e.g. env.SCRATCH = /scratch/$USER
#                        ($USER, $HOME, $SLURM_JOB_* expanded in it)

CLUSSTER_SLURM_CONF="${CLUSSTER_SLURM_CONF:-/etc/clusster/slurm.conf}"
declare -gA CL_CONF=() CL_VARS=()
declare -ga CL_ENV_NAMES=() CL_WORDS=() CL_KIND=() CL_DATASET=() CL_PATH=() CL_TAG=() CL_RULE=()
CL_ERR="" CL_OUT="" CL_USE_ENV=0

# Loads the site config into CL_CONF (with defaults); site env.NAME into CL_CONF[env.NAME]
# and CL_ENV_NAMES. $1: "optional" to accept a missing file. Returns 1 with CL_ERR.
clusster_load_conf() {
  CL_CONF=([clusster]=clusster [state_dir]=/var/spool/clusster-slurm
    [log_dir]=/var/log/clusster-slurm [stage_in_timeout]=1h [pin_for]=24h
    [stage_out_on_failure]=no [on_stage_in_failure]=cancel
    [path]=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  CL_ENV_NAMES=()
  if [ ! -r "$CLUSSTER_SLURM_CONF" ]; then
    [ "${1:-}" = optional ] && return 0
    CL_ERR="cannot read the site config $CLUSSTER_SLURM_CONF"
    return 1
  fi
  local line key value n=0 re='^([A-Za-z0-9_.]+)[[:space:]]*=[[:space:]]*(.*)$'
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    [ -z "$line" ] || [ "${line:0:1}" = "#" ] && continue
    if ! [[ $line =~ $re ]]; then
      CL_ERR="$CLUSSTER_SLURM_CONF:$n: not KEY = VALUE"
      return 1
    fi
    key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
    if [[ $value =~ ^\"(.*)\"$ ]] || [[ $value =~ ^\'(.*)\'$ ]]; then value="${BASH_REMATCH[1]}"; fi
    case "$key" in
      env.*)
        if ! [[ ${key#env.} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
          CL_ERR="$CLUSSTER_SLURM_CONF:$n: bad variable name $key"
          return 1
        fi
        [ -n "${CL_CONF[$key]+x}" ] || CL_ENV_NAMES+=("${key#env.}")
        ;;
      endpoint | token | token_file | ca_file | clusster | state_dir | log_dir | stage_in_timeout | pin_for | \
        stage_out_on_failure | on_stage_in_failure | path) ;;
      *)
        CL_ERR="$CLUSSTER_SLURM_CONF:$n: unknown key $key"
        return 1
        ;;
    esac
    CL_CONF[$key]="$value"
  done <"$CLUSSTER_SLURM_CONF"
  if [ -z "${CL_CONF[token]:-}" ] && [ -n "${CL_CONF[token_file]:-}" ]; then
    if [ -r "${CL_CONF[token_file]}" ]; then
      CL_CONF[token]="$(tr -d '[:space:]' <"${CL_CONF[token_file]}")"
    elif [ "${1:-}" != optional ]; then
      CL_ERR="cannot read token_file ${CL_CONF[token_file]}"
      return 1
    fi
  fi
  return 0
}

# Splits $1 into CL_WORDS. Returns 1 with CL_ERR on an unbalanced quote.
clusster_split_words() {
  local s="$1" i=0 c quote="" cur="" have=0
  CL_WORDS=()
  while [ "$i" -lt "${#s}" ]; do
    c="${s:i:1}"
    if [ -n "$quote" ]; then
      if [ "$c" = "$quote" ]; then quote=""; else cur+="$c"; fi
    elif [ "$c" = "'" ] || [ "$c" = '"' ]; then
      quote="$c" have=1
    elif [ "$c" = "\\" ]; then
      if [ $((i + 1)) -ge "${#s}" ]; then CL_ERR="a backslash ends the line"; return 1; fi
      i=$((i + 1))
      cur+="${s:i:1}" have=1
    elif [[ $c == [[:space:]] ]]; then
      if [ "$have" = 1 ]; then CL_WORDS+=("$cur"); fi
      cur="" have=0
    else
      cur+="$c" have=1
    fi
    i=$((i + 1))
  done
  if [ -n "$quote" ]; then CL_ERR="unbalanced $quote"; return 1; fi
  if [ "$have" = 1 ]; then CL_WORDS+=("$cur"); fi
  return 0
}

# The value of variable $1 into CL_OUT: CL_VARS, then (CL_USE_ENV=1) the environment.
clusster_lookup() {
  if [ -n "${CL_VARS[$1]+x}" ]; then CL_OUT="${CL_VARS[$1]}"; return 0; fi
  if [ "$CL_USE_ENV" = 1 ] && [ -n "${!1+x}" ]; then CL_OUT="${!1}"; return 0; fi
  return 1
}

# Expands $NAME, ${NAME}, $$ in $1 into CL_OUT. Returns 1 with CL_ERR.
clusster_expand() {
  local w="$1" out="" i=0 c next name rest
  while [ "$i" -lt "${#w}" ]; do
    c="${w:i:1}"
    if [ "$c" != '$' ]; then out+="$c"; i=$((i + 1)); continue; fi
    next="${w:i+1:1}"
    if [ "$next" = '$' ]; then out+='$'; i=$((i + 2)); continue; fi
    if [ "$next" = '{' ]; then
      rest="${w:i+2}"
      if [[ $rest != *"}"* ]]; then CL_ERR="unclosed \${ in $w"; return 1; fi
      name="${rest%%\}*}"
      if ! [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then CL_ERR="bad variable name \${$name}"; return 1; fi
      i=$((i + 3 + ${#name}))
    else
      rest="${w:i+1}"
      if ! [[ $rest =~ ^[A-Za-z_][A-Za-z0-9_]* ]]; then CL_ERR="a lone \$ in $w (write \$\$ for a \$)"; return 1; fi
      name="${BASH_REMATCH[0]}"
      i=$((i + 1 + ${#name}))
    fi
    if ! clusster_lookup "$name"; then CL_ERR="unknown variable \$$name"; return 1; fi
    out+="$CL_OUT"
  done
  CL_OUT="$out"
  return 0
}

# Adds the site's env.NAME variables to CL_VARS, each expanded with what CL_VARS has so far.
clusster_site_vars() {
  local name
  for name in "${CL_ENV_NAMES[@]}"; do
    clusster_expand "${CL_CONF[env.$name]}" || { CL_ERR="site config env.$name: $CL_ERR"; return 1; }
    CL_VARS[$name]="$CL_OUT"
  done
}

# Parses and expands the directives of the job script in file $1 into CL_KIND (in|out),
# CL_DATASET, CL_PATH, CL_TAG, CL_RULE; a relative path is made absolute from $2 (if given).
# Returns 1 with CL_ERR ("line N: ...").
clusster_parse() {
  local file="$1" workdir="${2:-}" line stripped rest n=0 verb i word opt val tag rule
  local -a words
  CL_KIND=() CL_DATASET=() CL_PATH=() CL_TAG=() CL_RULE=()
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line="${line%$'\r'}"
    stripped="${line#"${line%%[![:space:]]*}"}"
    [ -z "$stripped" ] && continue
    [ "${stripped:0:1}" = "#" ] || break
    case "$line" in
      "#CLUSSTER") continue ;;
      "#CLUSSTER"[[:space:]]*) rest="${line#\#CLUSSTER}" ;;
      "#BB_LUA" | "#BB_LUA"[[:space:]]*) rest="${line#\#BB_LUA}" ;;
      *) continue ;;
    esac
    clusster_split_words "$rest" || { CL_ERR="line $n: $CL_ERR"; return 1; }
    words=("${CL_WORDS[@]}")
    if [[ $line == "#BB_LUA"* ]] && [ "${words[0]:-}" = clusster ]; then words=("${words[@]:1}"); fi
    [ "${#words[@]}" -eq 0 ] && continue
    verb="${words[0]}"
    words=("${words[@]:1}")
    # Expand every word first: the option names cannot come from a variable's value.
    tag="" rule=""
    case "$verb" in
      stage_in)
        if [ "${#words[@]}" -ne 2 ]; then CL_ERR="line $n: stage_in takes NS/NAME[@REF] DEST"; return 1; fi
        ;;
      stage_out)
        if [ "${#words[@]}" -lt 2 ]; then CL_ERR="line $n: stage_out takes SRC NS/NAME [--tag T] [--rule R]"; return 1; fi
        i=2
        while [ "$i" -lt "${#words[@]}" ]; do
          word="${words[i]}"
          if [[ $word =~ ^--([a-z]+)=(.*)$ ]]; then
            opt="${BASH_REMATCH[1]}" val="${BASH_REMATCH[2]}"
          elif [[ $word =~ ^--([a-z]+)$ ]]; then
            opt="${BASH_REMATCH[1]}"
            i=$((i + 1))
            if [ "$i" -ge "${#words[@]}" ]; then CL_ERR="line $n: $word needs a value"; return 1; fi
            val="${words[i]}"
          else
            opt=""
          fi
          case "$opt" in
            tag) [ -z "$tag" ] || { CL_ERR="line $n: --tag given twice"; return 1; }; tag="+$val" ;;
            rule) [ -z "$rule" ] || { CL_ERR="line $n: --rule given twice"; return 1; }; rule="+$val" ;;
            *) CL_ERR="line $n: stage_out: unexpected \"$word\" (--tag T or --rule R)"; return 1 ;;
          esac
          i=$((i + 1))
        done
        words=("${words[0]}" "${words[1]}")
        ;;
      *)
        CL_ERR="line $n: unknown directive \"$verb\" (stage_in or stage_out)"
        return 1
        ;;
    esac
    for i in "${!words[@]}"; do
      clusster_expand "${words[i]}" || { CL_ERR="line $n: $CL_ERR"; return 1; }
      words[i]="$CL_OUT"
    done
    for opt in tag rule; do
      val="${!opt}"
      [ -n "$val" ] || continue
      clusster_expand "${val#+}" || { CL_ERR="line $n: $CL_ERR"; return 1; }
      printf -v "$opt" '+%s' "$CL_OUT"
    done
    local dataset path re_in='^[^/@[:space:]]+/[^@[:space:]]+(@[^@[:space:]]+)?$'
    local re_out='^[^/@[:space:]]+/[^@[:space:]]+$'
    if [ "$verb" = stage_in ]; then
      dataset="${words[0]}" path="${words[1]}"
      [[ $dataset =~ $re_in ]] || { CL_ERR="line $n: \"$dataset\" is not NS/NAME[@TAG|@VERSION-ID]"; return 1; }
      CL_KIND+=(in)
    else
      path="${words[0]}" dataset="${words[1]}"
      [[ $dataset =~ $re_out ]] || { CL_ERR="line $n: \"$dataset\" is not NS/NAME"; return 1; }
      CL_KIND+=(out)
    fi
    [ -n "$path" ] || { CL_ERR="line $n: empty path"; return 1; }
    if [ "${path:0:1}" != / ] && [ -n "$workdir" ]; then path="$workdir/$path"; fi
    CL_DATASET+=("$dataset") CL_PATH+=("$path") CL_TAG+=("$tag") CL_RULE+=("$rule")
  done <"$file"
  return 0
}

# The arguments of `clusster stage-out` for directive $1 (an index), into CL_WORDS.
clusster_stage_out_args() {
  CL_WORDS=(stage-out)
  [ -n "${CL_TAG[$1]}" ] && CL_WORDS+=(--tag "${CL_TAG[$1]#+}")
  [ -n "${CL_RULE[$1]}" ] && CL_WORDS+=(--rule "${CL_RULE[$1]#+}")
  CL_WORDS+=(-- "${CL_PATH[$1]}" "${CL_DATASET[$1]}")
}

# Fills CL_VARS for a Slurm job run as root (prolog, epilog): $1 job id, $2 uid, $3 gid,
# $4 working directory; user and home from the passwd entry. Returns 1 with CL_ERR.
clusster_job_vars() {
  local entry user home
  entry="$(getent passwd "$2")" || { CL_ERR="uid $2 has no passwd entry"; return 1; }
  IFS=: read -r user _ _ _ _ home _ <<<"$entry"
  CL_VARS=([SLURM_JOB_ID]="$1" [SLURM_JOB_UID]="$2" [SLURM_JOB_GID]="$3" [SLURM_JOB_USER]="$user"
    [USER]="$user" [HOME]="$home" [SLURM_JOB_WORK_DIR]="${4:-$home}")
  clusster_site_vars
}

# Runs `clusster ARGS...` as the job's user (from CL_VARS), from root, in a clean environment
# with the site's endpoint and token (exported by the shell, never on a command line).
clusster_cli_as_user() {
  (
    for v in $(compgen -e); do unset "$v" 2>/dev/null || true; done
    # Quoted NAME=value words: this subshell's own environment, for the CLI only.
    export "PATH=${CL_CONF[path]}" "HOME=${CL_VARS[HOME]}" "USER=${CL_VARS[USER]}" \
      "LOGNAME=${CL_VARS[USER]}" "SLURM_JOB_ID=${CL_VARS[SLURM_JOB_ID]}" RUST_LOG=warn \
      "CLUSSTER_ENDPOINT=${CL_CONF[endpoint]:-}" "CLUSSTER_TOKEN=${CL_CONF[token]:-}" \
      CLUSSTER_CLIENT_CONFIG=/dev/null
    if [ -n "${CL_CONF[ca_file]:-}" ]; then export "CLUSSTER_CA_FILE=${CL_CONF[ca_file]}"; fi
    cd / && exec setpriv --reuid="${CL_VARS[SLURM_JOB_UID]}" --regid="${CL_VARS[SLURM_JOB_GID]}" \
      --init-groups -- "${CL_CONF[clusster]}" "$@"
  )
}

# What an exit code of the CLI means.
clusster_exit_meaning() {
  case "$1" in
    0) echo ok ;; 2) echo usage ;; 3) echo damage ;; 4) echo "not found" ;; 5) echo "no space" ;;
    6) echo "transfer failed" ;; 7) echo "verification failed" ;; 8) echo "timed out" ;;
    *) echo failure ;;
  esac
}

# Appends a line to the job's log, <log_dir>/<job id>.log (root's scripts only).
clusster_log() {
  local dir="${CL_CONF[log_dir]}"
  mkdir -p "$dir" 2>/dev/null && chmod 0750 "$dir" 2>/dev/null
  printf '%s %s\n' "$(date +%Y-%m-%dT%H:%M:%S)" "$*" >>"$dir/${CL_VARS[SLURM_JOB_ID]:-unknown}.log" 2>/dev/null || true
}
