#!/usr/bin/env bash
# EChat recipe: EChat-mini corpus -> (later) tokenizers -> three-stage training -> token2wav -> decode -> score.
#
#   ./run.sh                                  # all stages with the mini (CPU) defaults
#   ./run.sh --stage 1 --stop_stage 1         # only validate the data and write the corpus report
#   ./run.sh --hours 0.5 --nj 8 --data_type shard --dump_feats true
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

# ---- options (every one can be given as --name value) ----
stage=0               # first stage to run
stop_stage=15         # last stage to run
nj=2                  # parallel jobs for data work and speech scoring
seed=777              # corpus synthesis seed
hours=3.0             # EChat-mini train size, hours of user audio
dev_hours=0.2         # dev size
test_hours=0.3        # test size
data=data             # data directory (splits under $data/{train,dev,test})
exp=exp               # experiment root; logs of data stages go to $exp/data_prep/log
data_type=raw         # raw | shard: what later stages read
num_utts_per_shard=1000
dump_feats=false      # true: dump log-mel features to kaldiio ark/scp (stage 2)
feats_type=whisper_log_mel   # whisper_log_mel | fbank
sets="train dev test"
spm_vocab=1000        # text tokenizer size (mini; paper scale uses the LLM's own tokenizer)
conf_dir=conf/mini    # stage configs: conf/mini (CPU) or conf/paper (GPU cluster)
nproc=1               # training processes on this node (>1: torchrun, one per GPU / CPU slot)
threads=2             # torch threads per training/decoding process on CPU
train_extra=""        # extra bin/train.py arguments, e.g. "--override train_conf.max_epoch=1"
speech_codes=512      # k-means speech-token codebook (mini; paper scale: S3Tokenizer, 4096)
speech_token_source=log_mel  # what k-means clusters: log_mel (stacked frames) | encoder (hidden states of the
speech_token_layer=""        # pre-trained $exp/encoder; --speech_token_layer N: of block N, "" = its output)
encoder_conf=encoder  # encoder pre-training config of stage 5: $conf_dir/train_<this>.yaml (when it exists)
llm_pretrain=true     # true: stage 5 first pre-trains the LLM on the corpus text ($conf_dir/pretrain_llm.yaml, when
llm_pretrain_steps=600  # it exists) for this many steps -> $exp/llm, a Hugging Face model dir stage 1 starts from, as
                        # the paper starts from a pretrained Qwen (false: from random weights)
llm_pretrain_minutes="" # a wall-clock cap as well ("" = none; --llm_pretrain_steps "" --llm_pretrain_minutes 3: a
                        # budget in minutes alone, which ends elsewhere on a faster or busier machine)
reply_asr=false       # true: stages 1 and 2 also train ASR on the reply audio (train_reply_asr, one voice, ~45 % of
                      # the audio); the mini stages reach their accuracy on the labelled list alone, in half the time
think=true            # false: stage 3 without dual thinking (the paper's ablation) -> $exp/stage3_nothink
understanding=true    # false: the ablation without the understanding stage: stage 2 starts from the pre-trained
                      # encoder and LLM (adapter from scratch) instead of stage 1 -> $exp/stage2_nounder, and
                      # stage 3 from that -> $exp/stage3*_nounder
think_style=""        # stage 3 CoT form: "" = the config's (auto: the corpus's natural-language CoT); tag | natural |
                      # cues (the tag form without the transcript) -> $exp/stage3_<style>
t2w_conf=token2wav    # token-to-wave config $conf_dir/<this>.yaml, trained into $exp/<this> (stages 10-15)
t2w_parallel=true     # true: when one run covers stages 8-10, stage 10 trains in the background beside stages 8-9
                      # (it needs only the speech tokens), the --threads split between the two (needs --threads >= 2),
                      # and stage 11's resynthesis follows it there when the run goes on to stage 11
t2w_flow_steps=2400   # token-to-wave training budget (steps) of the flow model ...
t2w_vocoder_steps=2700  # ... and of the vocoder (its lr decays over them); ~7-8 and ~16 min on 2 CPU cores
t2w_flow_minutes=""   # wall-clock caps as well ("" = none; with the steps "" a budget in minutes alone)
t2w_vocoder_minutes=""
resynth_utts=20       # distinct test replies resynthesised and scored in stage 11
s2s_systems="full:stage3:true no_think:stage3_nothink:false"  # NAME:DIR:THINK, stages 12-15 (think_off:stage3:false: the full model prompted without the CoT)
s2s_every=3           # stage 12 decodes every Nth test record (1 = all; every category keeps its share, ~13 min
                      # per system on 2 CPU cores for all 396 records)
s2s_batch_size=8      # S2S decoding batch (1: per-utterance latency figures; bench/latency.py measures those)
judge_conf=""         # stage 13 LLM judge YAML, e.g. conf/judge/judge.yaml ("" = offline scores only)

help_message=$(cat <<HELP
Usage: $0 [options]
Stages:
  0  synthesise the EChat-mini corpus (local/synth_echat_mini.py) -> $data/{train,dev,test}
  1  validate every split (tools/validate_data.py) and write the corpus report -> $data/report
  2  optional feature dump (--dump_feats true): kaldiio ark/scp of $feats_type -> $data/<set>/feats
  3  shards (--data_type shard): tar shards -> $data/<set>/shards, list $data/<set>/data.shards.list
  4  text tokenizer: SentencePiece on the train text, replies and CoTs -> $data/lang/spm.model
  5  train stage 1 (understanding: ASR + tags; --reply_asr: + ASR on the reply audio) -> $exp/stage1; configs with a
     train_$encoder_conf.yaml (conf/mini; --encoder_conf) first pre-train the encoder (char CTC + cue classifiers) -> $exp/encoder,
     and with --llm_pretrain true (conf_dir/pretrain_llm.yaml) the LLM on the corpus text -> $exp/llm
  6  decode + score stage 1 on dev/test (ASR WER/CER, per-cue tag accuracy) -> $exp/stage1/decode_<set>/results.md
  7  speech tokens: k-means units on the train reply audio (--speech_token_source: of log-mel frames or of the
     pre-trained encoder's hidden states), response_tokens for every split -> data.tok.list
  8  train stage 2 (generation: TTS, S2S/S2T/text chat, understanding replay) from stage 1 -> $exp/stage2
     (--understanding false: from the pre-trained encoder and LLM, without stage 1 -> $exp/stage2_nounder)
  9  train stage 3 (empathy: S2S with dual thinking + replay) from stage 2 -> $exp/stage3 (stage3_nothink with
     --think false, stage3_<style> with --think_style)
 10  token-to-wave: flow matching (tokens -> mel) and vocoder (mel -> wave) on the reply audio -> $exp/$t2w_conf
 11  resynthesise test replies from gold tokens (Griffin-Lim and neural vocoder) and by copy synthesis (the
     original audio's mel through each vocoder), score them against the original audio (pocketsphinx WER,
     DNSMOS, speaker similarity), next to the stage-2 model's TTS of the same reply texts (when $exp/stage2 is
     trained) -> $exp/$t2w_conf/resynth_test.md
 12  S2S decoding (s2s_think, with/without the CoT) of test with streamed reply wavs, per --s2s_systems
     -> $exp/<dir>/decode_test_<name>/{hyp.jsonl,hyp.summary.json,reply_wavs/}
 13  score them per EChat-eval category -> $exp/<dir>/decode_test_<name>/{results.md,results.json,plots/}
 14  merge the systems into $exp/RESULTS.md and print the summary table
 15  demo gallery (index.html + audio, plays from file://) per S2S system -> $exp/<dir>/decode_test_<name>/gallery
Options (default):
  --stage ($stage) --stop_stage ($stop_stage) --nj ($nj)
  --seed ($seed) --hours ($hours) --dev_hours ($dev_hours) --test_hours ($test_hours)
  --data ($data) --exp ($exp) --sets ("$sets")
  --data_type ($data_type; raw|shard) --num_utts_per_shard ($num_utts_per_shard)
  --dump_feats ($dump_feats) --feats_type ($feats_type; whisper_log_mel|fbank)
  --spm_vocab ($spm_vocab) --conf_dir ($conf_dir) --nproc ($nproc) --threads ($threads)
  --train_extra ("$train_extra") --speech_codes ($speech_codes) --speech_token_source ($speech_token_source)
  --speech_token_layer ("$speech_token_layer") --encoder_conf ($encoder_conf)
  --reply_asr ($reply_asr) --think ($think) --think_style ("$think_style")
  --llm_pretrain_steps ("$llm_pretrain_steps") --llm_pretrain_minutes ("$llm_pretrain_minutes")
  --t2w_conf ($t2w_conf) --t2w_parallel ($t2w_parallel) --t2w_flow_steps ("$t2w_flow_steps") --t2w_vocoder_steps ("$t2w_vocoder_steps")
  --t2w_flow_minutes ("$t2w_flow_minutes") --t2w_vocoder_minutes ("$t2w_vocoder_minutes") --resynth_utts ($resynth_utts)
  --s2s_systems ("$s2s_systems") --s2s_every ($s2s_every) --s2s_batch_size ($s2s_batch_size)
  --judge_conf ($judge_conf)
HELP
)
. tools/parse_options.sh

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [run.sh:${BASH_LINENO[0]}] $*" >&2; }
# run_logged LOGFILE CMD...: run a command, showing its output and keeping it in LOGFILE
run_logged() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$logfile")"
  log "$* (log: $logfile)"
  { echo "# $*"; echo "# started $(date)"; "$@" 2>&1; echo "# ended $(date)"; } | tee "$logfile"
}
# up_to_date TARGET SOURCE...: TARGET exists and is newer than every SOURCE
up_to_date() {
  local target=$1; shift
  [ -e "$target" ] || return 1
  local s; for s in "$@"; do [ "$target" -nt "$s" ] || return 1; done
}
# budget_opts ARRAY OPTION STEPS MINUTES: sets ARRAY=(--max_steps STEPS --max_minutes MINUTES), empty ones left out
budget_opts() {
  local -n opts=$1
  opts=(${3:+--max_steps "$3"} ${4:+--max_minutes "$4"})
  [ ${#opts[@]} -gt 0 ] || { log "$2: give a step or a minute budget ($2_steps and $2_minutes are both empty)"; exit 2; }
  if [ -n "$3" ] && ! [[ $3 =~ ^[1-9][0-9]*$ ]]; then log "$2_steps must be a positive whole number, got '$3'"; exit 2; fi
}
case $data_type in raw|shard) ;; *) log "--data_type must be raw or shard, got '$data_type'"; exit 2 ;; esac
# the training budgets, checked before any stage runs
llm_budget=()
if [ "$llm_pretrain" = true ]; then budget_opts llm_budget --llm_pretrain "$llm_pretrain_steps" "$llm_pretrain_minutes"; fi
budget_opts flow_budget --t2w_flow "$t2w_flow_steps" "$t2w_flow_minutes"
budget_opts vocoder_budget --t2w_vocoder "$t2w_vocoder_steps" "$t2w_vocoder_minutes"
case $think in true|false) ;; *) log "--think must be true or false, got '$think'"; exit 2 ;; esac
case $speech_token_source in
  log_mel|encoder) ;; *) log "--speech_token_source must be log_mel or encoder, got '$speech_token_source'"; exit 2 ;;
esac
case $think_style in ""|auto|tag|natural|cues) ;; *) log "--think_style must be auto, tag, natural or cues, got '$think_style'"; exit 2 ;; esac
logdir=$exp/data_prep/log
export OMP_NUM_THREADS=$threads

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: synthesise EChat-mini ($hours h train, seed $seed)"
  run_logged "$logdir/synth_echat_mini.log" \
    python local/synth_echat_mini.py --out_dir "$data" --hours "$hours" --dev_hours "$dev_hours" \
      --test_hours "$test_hours" --seed "$seed" --nj "$nj"
  if up_to_date "$data/train_reply_asr/data.list" "$data/train/data.list"; then
    log "  $data/train_reply_asr: up to date"
  else
    run_logged "$logdir/make_reply_asr_list.log" \
      python local/make_reply_asr_list.py "$data/train/data.list" "$data/train_reply_asr/data.list"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: validate data and write the corpus report"
  for x in $sets; do
    if up_to_date "$data/$x/.validated" "$data/$x/data.list"; then
      log "  $data/$x: validated already"; continue
    fi
    run_logged "$logdir/validate_$x.log" python tools/validate_data.py "$data/$x/data.list" --nj "$nj"
    touch "$data/$x/.validated"
  done
  lists=(); for x in $sets; do lists+=("$data/$x/data.list"); done
  if up_to_date "$data/report/report.md" "${lists[@]}"; then
    log "  $data/report: up to date"
  else
    run_logged "$logdir/corpus_report.log" python local/corpus_report.py --data_dir "$data" --out_dir "$data/report"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ "$dump_feats" = true ]; then
    log "stage 2: dump $feats_type features"
    for x in $sets; do
      run_logged "$logdir/compute_feats_$x.log" \
        python -m wenet_echat.bin.compute_feats --data_list "$data/$x/data.list" --feats_type "$feats_type" \
          --out_dir "$data/$x/feats" --nj "$nj"
    done
  else
    log "stage 2: skipped (--dump_feats false)"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  if [ "$data_type" = shard ]; then
    log "stage 3: make shards"
    for x in $sets train_reply_asr; do
      if up_to_date "$data/$x/data.shards.list" "$data/$x/data.list"; then
        log "  $data/$x: shards up to date"; continue
      fi
      run_logged "$logdir/make_shards_$x.log" \
        python tools/make_shard_list.py --num_utts_per_shard "$num_utts_per_shard" --nj "$nj" \
          "$data/$x/data.list" "$data/$x/shards" "$data/$x/data.shards.list"
    done
  else
    log "stage 3: skipped (--data_type raw)"
  fi
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: text tokenizer"
  # train_tokenizer skips itself when $data/lang/spm.model is newer than the list and was made with these options
  run_logged "$exp/lang/log/train_tokenizer.log" \
    python -m wenet_echat.bin.train_tokenizer --data_list "$data/train/data.list" \
      --model_prefix "$data/lang/spm" --vocab_size "$spm_vocab"
fi

# data_list SET [NAME]: the list a training/decoding stage reads for SET (raw NAME.list or its shard list);
# NAME is "data" (default) or "data.tok" (with speech tokens, stage 7)
data_list() {
  local name=${2:-data}
  if [ "$data_type" = shard ]; then echo "$data/$1/$name.shards.list"; else echo "$data/$1/$name.list"; fi
}
# the mini configs name the SentencePiece model of stage 4 as data/lang/spm.model; with another --data they read
# $data/lang/spm.model (configs with the LLM's own tokenizer, conf/paper, have no such file and keep theirs)
spm_override=()
if [ "$data" != data ] && grep -qs "model: data/lang/spm.model" "$conf_dir/model.yaml"; then
  spm_override=(--override "tokenizer.model=$data/lang/spm.model")
fi
# train_stage [--init_llm HF_DIR] CONF DIR INIT PREFIXES LIST...: train with $conf_dir/train_CONF.yaml into DIR,
# initialised from INIT ("" = from scratch; PREFIXES: only those parameter prefixes, "" = all) and then the LLM from
# HF_DIR; a finished DIR is skipped, a killed one resumes where it stopped
train_stage() {
  local init_llm=""
  if [ "$1" = --init_llm ]; then init_llm=$2; shift 2; fi
  local name=$1 dir=$2 init=$3 prefixes=$4; shift 4
  if [ -f "$dir/final/model.pt" ]; then log "  $dir/final exists: $name trained"; return 0; fi
  local launcher=(python)
  [ "$nproc" -gt 1 ] && launcher=(torchrun --standalone --nproc_per_node "$nproc")
  # shellcheck disable=SC2086
  run_logged "$dir/log/train.log" "${launcher[@]}" -m wenet_echat.bin.train \
    --config "$conf_dir/train_$name.yaml" --train_data "$@" --cv_data "$cv_list" \
    --data_type "$data_type" --model_dir "$dir" --threads "$threads" ${init:+--init "$init"} \
    ${prefixes:+--init_prefixes $prefixes} ${init_llm:+--init_llm "$init_llm"} "${spm_override[@]}" $train_extra
}

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: train stage 1 (understanding)"
  cv_list=$(data_list dev)
  # ASR on the reply audio joins with --reply_asr true when the corpus has it (local/make_reply_asr_list.py)
  lists=("$(data_list train)")
  [ "$reply_asr" = true ] && [ -s "$(data_list train_reply_asr)" ] && lists+=("$(data_list train_reply_asr)")
  enc_init="" enc_prefixes=""
  if [ -f "$conf_dir/train_$encoder_conf.yaml" ]; then
    # from-scratch configs pre-train the encoder first (CTC + cue classifiers), standing in for the pretrained
    # Whisper encoder of the paper; stage 1 then takes its encoder.* weights
    log "  encoder pre-training ($conf_dir/train_$encoder_conf.yaml) -> $exp/encoder"
    train_stage "$encoder_conf" "$exp/encoder" "" "" "$(data_list train)"
    enc_init=$exp/encoder/final enc_prefixes=encoder.
  fi
  llm_init=()
  if [ "$llm_pretrain" = true ] && [ -f "$conf_dir/pretrain_llm.yaml" ]; then
    # the from-scratch LLM learns the corpus's language first, as the paper's stages start from a pretrained Qwen
    if [ -f "$exp/llm/model.safetensors" ]; then log "  $exp/llm: LLM pre-trained"
    else
      log "  LLM text pre-training ($conf_dir/pretrain_llm.yaml, ${llm_budget[*]}) -> $exp/llm"
      run_logged "$exp/llm/log/pretrain.log" python -m wenet_echat.bin.pretrain_llm \
        --config "$conf_dir/pretrain_llm.yaml" --data_list "$data/train/data.list" --valid_list "$data/dev/data.list" \
        --out_dir "$exp/llm" "${llm_budget[@]}" --threads "$threads" "${spm_override[@]}"
    fi
    llm_init=(--init_llm "$exp/llm")
  fi
  train_stage "${llm_init[@]}" stage1 "$exp/stage1" "$enc_init" "$enc_prefixes" "${lists[@]}"
fi

# decode_score DIR SET TASKS...: decode SET with model DIR into DIR/decode_SET, then score; skipped when up to date
decode_score() {
  local dir=$1 x=$2; shift 2
  local out=$dir/decode_$x
  if up_to_date "$out/results.md" "$dir/final/model.pt"; then log "  $out/results.md up to date"; return 0; fi
  run_logged "$out/log/decode.log" python -m wenet_echat.bin.decode --model_dir "$dir" --checkpoint final \
    --data_list "$(data_list "$x")" --data_type "$data_type" --tasks "$@" --out "$out/hyp.jsonl" \
    --threads "$threads" --batch_size 32
  run_logged "$out/log/score.log" python -m wenet_echat.bin.score --ref "$data/$x/data.list" \
    --hyp "$out/hyp.jsonl" --out "$out/results.md" --title "$(basename "$dir"), $x"
}

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: decode and score stage 1 (asr, tag)"
  for x in dev test; do decode_score "$exp/stage1" "$x" asr tag; done
  python local/plot_curves.py "$exp/stage1/train_log.jsonl" "$exp/stage1/curves.png"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: speech tokens (k-means, $speech_codes codes, $speech_token_source features)"
  tok_model=$data/speech_token/kmeans$speech_codes.npz source_opts=()
  if [ "$speech_token_source" = encoder ]; then
    tok_model=$data/speech_token/kmeans${speech_codes}_encoder${speech_token_layer}.npz
    source_opts=(--feature_source encoder --encoder_ckpt "$exp/encoder"
                 ${speech_token_layer:+--encoder_layer "$speech_token_layer"})
  fi
  # both tools skip finished work themselves (up-to-date model; cached wavs)
  run_logged "$exp/speech_token/log/train_kmeans.log" python -m wenet_echat.bin.train_speech_tokenizer \
    --data_list "$data/train/data.list" --field response_wav --k "$speech_codes" --out "$tok_model" --nj "$nj" \
    "${source_opts[@]}"
  for x in $sets; do
    if up_to_date "$data/$x/data.tok.list" "$data/$x/data.list" "$tok_model"; then
      log "  $data/$x/data.tok.list up to date"; continue
    fi
    run_logged "$exp/speech_token/log/extract_$x.log" python -m wenet_echat.bin.extract_speech_tokens \
      --tokenizer "$tok_model" --in_list "$data/$x/data.list" --out_list "$data/$x/data.tok.list" --nj "$nj"
    if [ "$data_type" = shard ]; then
      run_logged "$exp/speech_token/log/make_shards_$x.log" python tools/make_shard_list.py \
        --num_utts_per_shard "$num_utts_per_shard" --nj "$nj" \
        "$data/$x/data.tok.list" "$data/$x/shards_tok" "$data/$x/data.tok.shards.list"
    fi
  done
fi

# train_token2wav THREADS: stage 10's trainings (flow, then vocoder) with THREADS torch threads; finished parts skip
t2w=$exp/$t2w_conf
train_token2wav() {
  local part budget
  for part in flow vocoder; do
    if [ -f "$t2w/.$part.done" ]; then log "  $t2w: $part trained"; continue; fi
    budget=("${flow_budget[@]}"); [ "$part" = vocoder ] && budget=("${vocoder_budget[@]}")
    # a killed run resumes from $t2w/$part.train.pt when rerun (a step budget ends at the same step)
    OMP_NUM_THREADS=$1 run_logged "$t2w/log/train_$part.log" python -m wenet_echat.bin.train_token2wav \
      --config "$conf_dir/$t2w_conf.yaml" --part "$part" --data_list "$data/train/data.tok.list" \
      --valid_list "$data/dev/data.tok.list" --model_dir "$t2w" "${budget[@]}" --threads "$1"
    touch "$t2w/.$part.done"
  done
}
stage2_dir=$exp/stage2 nounder=""
if [ "$understanding" = false ]; then stage2_dir=$exp/stage2_nounder nounder=_nounder; fi
# resynth_test THREADS NJ: stage 11's work (gold-token resynthesis, copy synthesis, the stage-2 TTS when it is
# trained, their scores) with THREADS torch threads and NJ scoring jobs; what is up to date is skipped
resynth_test() {
  if ! up_to_date "$data/test_reply/data.list" "$data/test/data.tok.list" local/make_reply_asr_list.py; then
    run_logged "$logdir/make_reply_list_test.log" \
      python local/make_reply_asr_list.py "$data/test/data.tok.list" "$data/test_reply/data.list" --tasks asr tts
  fi
  local voc out copy tts systems=() scps
  for voc in griffinlim neural; do
    out=$t2w/resynth_test_$voc
    if ! up_to_date "$out/wav.scp" "$t2w/.vocoder.done" "$data/test_reply/data.list"; then
      run_logged "$out/log/synthesize.log" python -m wenet_echat.bin.synthesize --model_dir "$t2w" \
        --in_list "$data/test_reply/data.list" --out_dir "$out" --vocoder "$voc" --max_utts "$resynth_utts" \
        --threads "$1"
    fi
    systems+=(--system "$voc=$out/wav.scp")
    # copy synthesis (the original audio's mel through the vocoder, no flow) tells the vocoder's share of the loss
    copy=$t2w/copy_test_$voc
    if ! up_to_date "$copy/wav.scp" "$t2w/.vocoder.done" "$data/test_reply/data.list"; then
      run_logged "$copy/log/synthesize.log" python -m wenet_echat.bin.synthesize --model_dir "$t2w" \
        --in_list "$data/test_reply/data.list" --out_dir "$copy" --vocoder "$voc" --max_utts "$resynth_utts" \
        --threads "$1" --copy_synthesis
    fi
    systems+=(--system "copy_$voc=$copy/wav.scp")
  done
  scps=("$t2w"/{resynth,copy}_test_{neural,griffinlim}/wav.scp)
  # the stage-2 model's own TTS of the same reply texts through the same token-to-wave: the LLM's speech tokens
  # against the gold ones (the yardstick of the spoken replies of stages 12-13)
  if [ -f "$stage2_dir/final/model.pt" ]; then
    tts=$stage2_dir/decode_test_reply_tts
    if ! up_to_date "$tts/reply_wavs/tts/wav.scp" "$stage2_dir/final/model.pt" "$t2w/.flow.done" \
        "$t2w/.vocoder.done" "$data/test_reply/data.list"; then
      run_logged "$tts/log/decode.log" python -m wenet_echat.bin.decode --model_dir "$stage2_dir" --checkpoint final \
        --data_list "$data/test_reply/data.list" --tasks tts --limit "$resynth_utts" --out "$tts/hyp.jsonl" \
        --token2wav_dir "$t2w" --batch_size 4 --threads "$1"
    fi
    systems+=(--system "tts_$(basename "$stage2_dir")=$tts/reply_wavs/tts/wav.scp")
    scps+=("$tts/reply_wavs/tts/wav.scp")
  fi
  if up_to_date "$t2w/resynth_test.md" "${scps[@]}"; then
    log "  $t2w/resynth_test.md up to date"
  else
    run_logged "$t2w/log/score_resynth.log" python -m wenet_echat.bin.score_speech \
      --ref_list "$data/test_reply/data.list" --max_utts "$resynth_utts" "${systems[@]}" \
      --spk_ref_list "$data/train_reply_asr/data.list" --out "$t2w/resynth_test.md" --nj "$2" \
      --title "Resynthesis of $resynth_utts EChat-mini test replies from gold speech tokens (and their TTS)"
  fi
}
# kill_tree PID: PID and every process below it
kill_tree() {
  local child; for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
# stage 10 beside stages 8-9 (--t2w_parallel): neither needs the other, and two single-purpose processes on half
# the threads each get more done than one after the other on all of them; in a run that goes on to stage 11 its
# resynthesis follows in the background too (it needs only token-to-wave and, for its TTS row, stage 2, which ends
# first). Stage 10's block waits for them
t2w_pid="" all_threads=$threads
if [ "$t2w_parallel" = true ] && [ "$stage" -le 9 ] && [ "$stop_stage" -ge 10 ] && [ "$threads" -ge 2 ] \
    && { [ ! -f "$t2w/.flow.done" ] || [ ! -f "$t2w/.vocoder.done" ]; }; then
  threads=$((all_threads / 2))
  bg_stages=10; [ "$stop_stage" -ge 11 ] && bg_stages=10-11
  mkdir -p "$t2w/log"
  log "stage $bg_stages in the background beside stages 8-9, $((all_threads - threads)) threads ($t2w/log/background.log)"
  {
    train_token2wav $((all_threads - threads))
    if [ "$stop_stage" -ge 11 ]; then
      log "stage 11: resynthesise $resynth_utts test replies from gold tokens and score them"
      resynth_test $((all_threads - threads)) $(( nj > 1 ? nj / 2 : 1 ))
    fi
  } > "$t2w/log/background.log" 2>&1 &
  t2w_pid=$!
  trap '[ -z "$t2w_pid" ] || { log "stopping the background stage $bg_stages"; kill_tree "$t2w_pid"; }' EXIT
  export OMP_NUM_THREADS=$threads
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: train stage 2 (generation and spoken chat) -> $stage2_dir"
  cv_list=$(data_list dev data.tok)
  lists=("$(data_list train data.tok)")
  [ "$reply_asr" = true ] && [ -s "$(data_list train_reply_asr)" ] && lists+=("$(data_list train_reply_asr)")
  if [ "$understanding" = true ]; then
    train_stage stage2 "$stage2_dir" "$exp/stage1/final" "" "${lists[@]}"
  else
    log "  without the understanding stage: from the pre-trained encoder (and LLM), not $exp/stage1"
    enc_init="" llm_init=()
    [ -f "$exp/encoder/final/model.pt" ] && enc_init=$exp/encoder/final
    [ "$llm_pretrain" = true ] && llm_init=(--init_llm "$exp/llm")
    train_stage "${llm_init[@]}" stage2 "$stage2_dir" "$enc_init" "${enc_init:+encoder.}" "${lists[@]}"
  fi
fi

stage3_dir=$exp/stage3
if [ "$think" = false ]; then stage3_dir=$exp/stage3_nothink
elif [ -n "$think_style" ]; then stage3_dir=$exp/stage3_$think_style; fi
stage3_dir=$stage3_dir$nounder
if [ "$stage" -le 9 ] && [ "$stop_stage" -ge 9 ]; then
  log "stage 9: train stage 3 (empathy, think=$think${think_style:+, think_style=$think_style}) -> $stage3_dir"
  cv_list=$(data_list dev data.tok)
  if [ "$think" = false ]; then train_extra="$train_extra --override train_conf.think=false"
  elif [ -n "$think_style" ]; then train_extra="$train_extra --override train_conf.think_style=$think_style"; fi
  train_stage stage3 "$stage3_dir" "$stage2_dir/final" "" "$(data_list train data.tok)"
fi

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ]; then
  log "stage 10: token-to-wave (flow ${flow_budget[*]}, vocoder ${vocoder_budget[*]})"
  if [ -n "$t2w_pid" ]; then
    log "  waiting for stage $bg_stages in the background ($t2w/log/background.log)"
    pid=$t2w_pid; t2w_pid=""
    if ! wait "$pid"; then
      failed=10; grep -qs "stage 11: resynthesise" "$t2w/log/background.log" && failed=11
      log "stage $failed failed in the background: see $t2w/log/background.log"; exit 1
    fi
    threads=$all_threads; export OMP_NUM_THREADS=$threads
    log "  $t2w: flow and vocoder trained"
    [ "$bg_stages" = 10 ] || log "  $t2w/resynth_test.md written in the background (stage 11 reruns what is not up to date)"
  else
    train_token2wav "$threads"
  fi
fi

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ]; then
  log "stage 11: resynthesise $resynth_utts test replies from gold tokens and score them"
  resynth_test "$threads" "$nj"
fi

s2s_dirs() {  # "NAME DIR THINK" for each system of --s2s_systems whose model is trained
  local spec name sub think
  for spec in $s2s_systems; do
    IFS=: read -r name sub think <<< "$spec"
    case $think in true|false) ;; *) log "--s2s_systems: '$spec' needs THINK true|false"; exit 2 ;; esac
    if [ -f "$exp/$sub/final/model.pt" ]; then echo "$name $exp/$sub $think"
    else log "  $exp/$sub/final/model.pt missing: system $name left out"; fi
  done
}
if [ "$stage" -le 12 ] && [ "$stop_stage" -ge 12 ]; then
  log "stage 12: S2S decoding of test with reply wavs (every $s2s_every. record)"
  s2s_list=$(data_list test); s2s_type=$data_type
  if [ "$s2s_every" -gt 1 ]; then
    s2s_list=$data/test/data.every$s2s_every.list s2s_type=raw
    if ! up_to_date "$s2s_list" "$data/test/data.list"; then
      awk -v n="$s2s_every" '(NR - 1) % n == 0' "$data/test/data.list" > "$s2s_list.tmp" && mv "$s2s_list.tmp" "$s2s_list"
    fi
  fi
  while read -r name dir think; do
    out=$dir/decode_test_$name
    if up_to_date "$out/hyp.jsonl" "$dir/final/model.pt" "$t2w/.vocoder.done" "$s2s_list"; then
      log "  $out/hyp.jsonl up to date"; continue
    fi
    think_opt=(); [ "$think" = false ] && think_opt=(--no_think)
    run_logged "$out/log/decode.log" python -m wenet_echat.bin.decode --model_dir "$dir" --checkpoint final \
      --data_list "$s2s_list" --data_type "$s2s_type" --tasks s2s_think "${think_opt[@]}" \
      --out "$out/hyp.jsonl" --token2wav_dir "$t2w" --batch_size "$s2s_batch_size" --threads "$threads"
  done < <(s2s_dirs)
fi

if [ "$stage" -le 13 ] && [ "$stop_stage" -ge 13 ]; then
  log "stage 13: score S2S decoding per EChat-eval category"
  while read -r name dir think; do
    out=$dir/decode_test_$name
    if up_to_date "$out/results.json" "$out/hyp.jsonl"; then log "  $out/results.json up to date"; continue; fi
    run_logged "$out/log/score.log" python -m wenet_echat.bin.score --ref "$data/test/data.list" \
      --hyp "$out/hyp.jsonl" --out "$out/results.md" --title "$name, test" --system "$name" \
      --speech --spk_ref_list "$data/train_reply_asr/data.list" --nj "$nj" ${judge_conf:+--judge_conf "$judge_conf"}
  done < <(s2s_dirs)
fi

if [ "$stage" -le 14 ] && [ "$stop_stage" -ge 14 ]; then
  log "stage 14: $exp/RESULTS.md"
  systems=()
  while read -r name dir think; do
    res=$dir/decode_test_$name/results.json
    if [ -f "$res" ]; then systems+=("$name=$res"); else log "  $res missing (stages 12-13): $name left out"; fi
  done < <(s2s_dirs)
  if [ ${#systems[@]} -eq 0 ]; then log "  no scored system: run stages 12-13 first"; exit 1; fi
  python -m wenet_echat.bin.report --systems "${systems[@]}" --out "$exp/RESULTS.md" \
    --title "EChat-mini test, $(basename "$conf_dir") configs"
fi

if [ "$stage" -le 15 ] && [ "$stop_stage" -ge 15 ]; then
  log "stage 15: demo gallery of the S2S decoding"
  while read -r name dir think; do
    out=$dir/decode_test_$name
    [ -f "$out/hyp.jsonl" ] || { log "  $out/hyp.jsonl missing (stage 12): $name left out"; continue; }
    if up_to_date "$out/gallery/index.html" "$out/hyp.jsonl"; then log "  $out/gallery up to date"; continue; fi
    sessions=(); [ -f "$exp/chat/session.jsonl" ] && sessions=(--session "$exp/chat/session.jsonl")
    run_logged "$out/log/gallery.log" python -m wenet_echat.bin.make_gallery --out_dir "$out/gallery" \
      --hyp "$out/hyp.jsonl" --data_list "$data/test/data.list" "${sessions[@]}" --title "EChat-mini, $name"
  done < <(s2s_dirs)
fi

log "done (stages $stage..$stop_stage)"
