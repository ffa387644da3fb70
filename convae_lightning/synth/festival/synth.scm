;;; Helpers that convae_lightning.synth.engine loads into every `festival -b` batch script.
;;;
;;; One batch synthesises many utterances in one Festival process (its start-up and voice
;;; loading cost more than a sentence). `SayText` is avoided: it tries to play audio.

(define (convae:diphone voicefn f0mean f0std stretch)
  "Select a diphone voice, then set its speaker's pitch mean/range (Hz) and duration stretch."
  (voicefn)
  ;; The kal/ked voices map the intonation model's F0 onto these targets (Int_Targets_LR).
  (set! int_lr_params
        (list (list 'target_f0_mean f0mean) (list 'target_f0_std f0std)
              '(model_f0_mean 170) '(model_f0_std 34)))
  (Parameter.set 'Duration_Stretch stretch))

(define (convae:hts voicefn speed)
  "Select an HTS voice and multiply its speaking rate by SPEED."
  (voicefn)
  ;; The voice function resets hts_engine_params, so the speaker's option goes after it. The
  ;; engine reads it when it first loads the voice, hence one Festival process per speaker.
  ;; (Festival 2.5's HTS module ignores the engine's pitch shift, -fm.)
  (set! hts_engine_params (append hts_engine_params (list (list "-r" speed)))))

(define (convae:say key text wavfile labfile)
  "Synthesise TEXT, save the wave and write each segment's end and each word's span."
  ;; `Utterance` is a special form that does not evaluate its data argument: build the call.
  (let ((utt (eval (list 'Utterance 'Text text))) (fd nil))
    (utt.synth utt)
    (utt.save.wave utt wavfile 'riff)
    (set! fd (fopen labfile "w"))
    (mapcar
     (lambda (s) (format fd "S %s %f\n" (item.name s) (item.feat s 'end)))
     (utt.relation.items utt 'Segment))
    (mapcar
     (lambda (w)
       (format fd "W %s %f %f\n" (item.name w) (item.feat w 'word_start) (item.feat w 'word_end)))
     (utt.relation.items utt 'Word))
    (fclose fd)
    ;; stderr is unbuffered, so Python sees each utterance as soon as it is done.
    (format stderr "CONVAE-DONE %s\n" key)))
