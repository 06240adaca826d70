"""Policy learning on beliefs (DESIGN.md §6): ``dynamite-offline train``.

The pipeline has three stages, each in its own module:

1. **belief** (:mod:`offline_dynamite.belief`): fit the posterior, or take a trained one;
2. **relabel** (:mod:`.hyperstates`): run every dataset trajectory through the frozen posterior
   and replace each state by the hyper-state ``[s_t, μ_t, log σ²_t]`` (or ``s_t`` alone, or
   ``[s_t, m_t]`` with the true latent, for the ``no-belief`` and ``oracle`` variants);
3. **policy** (:mod:`.trainer`): train a conservative offline RL algorithm from d3rlpy
   (:mod:`.algos`) on the hyper-states.

:mod:`.runs` ties them into a resumable run folder; :mod:`offline_dynamite.online` loads the
result as a policy that updates its belief step by step.
"""
