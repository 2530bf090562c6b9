#!/usr/bin/env python
"""Generate specprobe's built-in specialty QA data (``specprobe/data/demo/questions.json``).

The questions are short clinical vignettes produced from templates and a small
clinical knowledge table written for specprobe (no text copied from MedQA or any
other data set; MIT licence, like the rest of the project).  Output format is the
S-MedQA one: a JSON list of ``{"id", "Question", "Specialty", "Options", "Answer"}``
with four options, the answer being one of them.  Specialty names are spelled as
in S-MedQA.

Each specialty has its own conditions, findings, tests and drugs, so there are
specialty-specific terms.  Four question types are generated from every condition:
``diagnosis`` (most likely diagnosis), ``test`` (best test to confirm),
``treatment`` (most appropriate treatment) and ``mechanism`` (mechanism of action
of the drug given).  Distractors are drawn from the same specialty, excluding
anything listed as also acceptable for that condition (``avoid``), so that the keyed
answer is the only correct option.

Deterministic: the same ``--seed`` gives the same file byte for byte.

Usage::

    python scripts/build_demo_questions.py [--per-specialty 100] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "specprobe" / "data" / "demo" / "questions.json"


@dataclass
class Condition:
    name: str
    ages: tuple[int, int]
    findings: list[str]  # phrases that follow "presents with"; the first `key` are always used
    result: str = ""  # test result sentence (diagnosis/treatment questions only)
    history: str = ""  # extra sentence with {He}/{he}/{His}/{his} placeholders
    sex: str = "any"  # "any", "F" or "M"
    test: str | None = None  # best test to confirm the diagnosis
    tx: str | None = None  # most appropriate treatment
    tx_q: str = "treatment"  # "Which of the following is the most appropriate {tx_q}?"
    test_q: str = "test to confirm the diagnosis"
    drug: str | None = None  # drug named in the mechanism question
    mech_with: str | None = None  # "A .. {who} with {mech_with} is started on {drug}" (default: the name)
    mech: str | None = None  # its mechanism of action
    avoid: tuple[str, ...] = field(default_factory=tuple)  # never use as distractors
    acute: bool = False  # may be "brought to the emergency department"
    key: int = 1  # number of leading findings that every vignette contains


# --------------------------------------------------------------------- knowledge
# Written for specprobe.  Each keyed answer was chosen to be unambiguous against
# the distractor pool of its specialty (see `avoid`).

SPECIALTIES: dict[str, list[Condition]] = {
    "Cardiology": [
        Condition(
            "Acute inferior myocardial infarction",
            acute=True,
            ages=(50, 78),
            findings=[
                "crushing substernal chest pain that began one hour ago",
                "sweating",
                "nausea",
                "pain radiating to the left arm",
            ],
            result="An electrocardiogram shows ST-segment elevation in leads II, III and aVF.",
            history="{He} has a history of smoking and hyperlipidemia.",
            test="Electrocardiography",
            test_q="initial diagnostic test",
            tx="Percutaneous coronary intervention",
            tx_q="definitive treatment",
            drug="aspirin",
            mech="Irreversible inhibition of cyclooxygenase",
            avoid=("Serum troponin I", "Echocardiography"),
        ),
        Condition(
            "Atrial fibrillation",
            (60, 85),
            ["palpitations", "an irregularly irregular pulse of 130/min", "fatigue"],
            key=2,
            result="An electrocardiogram shows absent P waves and irregularly irregular narrow QRS complexes.",
            test="Electrocardiography",
            tx="Metoprolol",
            tx_q="drug for ventricular rate control",
            drug="metoprolol",
            mech="Selective blockade of beta-1 adrenergic receptors",
            avoid=("Echocardiography", "Intravenous labetalol", "Holter monitoring"),
        ),
        Condition(
            "Heart failure with reduced ejection fraction",
            (55, 80),
            [
                "progressive shortness of breath on exertion",
                "orthopnea",
                "bilateral pitting leg edema",
                "jugular venous distension",
                "an S3 gallop",
                "bibasilar crackles",
            ],
            key=2,
            result="Echocardiography shows a left ventricular ejection fraction of 25%.",
            test="Echocardiography",
            tx="Furosemide",
            tx_q="drug to relieve fluid overload",
            drug="furosemide",
            mech="Inhibition of the Na-K-2Cl cotransporter in the loop of Henle",
            avoid=("Metoprolol", "Intravenous labetalol"),
        ),
        Condition(
            "Aortic stenosis",
            (70, 88),
            [
                "fainting while climbing stairs",
                "a crescendo-decrescendo systolic murmur at the right upper sternal border",
                "chest pain on exertion",
                "shortness of breath on exertion",
            ],
            key=2,
            result="Echocardiography shows a heavily calcified aortic valve with a valve area of 0.7 cm2.",
            test="Echocardiography",
            tx="Aortic valve replacement",
            tx_q="definitive treatment",
        ),
        Condition(
            "Acute pericarditis",
            acute=True,
            ages=(20, 45),
            findings=[
                "sharp chest pain that improves when leaning forward",
                "a pericardial friction rub",
                "low-grade fever",
            ],
            history="{He} had a viral upper respiratory infection two weeks ago.",
            result="An electrocardiogram shows diffuse ST-segment elevation with PR-segment depression.",
            test="Electrocardiography",
            tx="Ibuprofen and colchicine",
            drug="colchicine",
            mech="Inhibition of microtubule polymerization",
            avoid=("Echocardiography", "Serum troponin I"),
        ),
        Condition(
            "Paroxysmal supraventricular tachycardia",
            acute=True,
            ages=(20, 45),
            findings=["sudden-onset palpitations", "lightheadedness", "a regular pulse of 190/min"],
            result="An electrocardiogram shows a regular narrow-complex tachycardia without visible P waves; "
            "vagal maneuvers have failed.",
            test="Electrocardiography",
            tx="Intravenous adenosine",
            tx_q="next step in management",
            drug="adenosine",
            mech="Transient block of atrioventricular nodal conduction via A1 receptors",
            avoid=("Metoprolol", "Intravenous labetalol", "Holter monitoring"),
        ),
        Condition(
            "Cardiac tamponade",
            acute=True,
            ages=(30, 70),
            findings=[
                "low blood pressure",
                "distended neck veins",
                "muffled heart sounds",
                "a fall in systolic pressure of 15 mm Hg during inspiration",
            ],
            key=3,
            result="Echocardiography shows a large pericardial effusion with right ventricular diastolic collapse.",
            test="Echocardiography",
            tx="Pericardiocentesis",
            tx_q="next step in management",
        ),
        Condition(
            "Aortic dissection",
            acute=True,
            ages=(50, 75),
            findings=[
                "sudden tearing chest pain radiating to the back",
                "a blood pressure difference of 30 mm Hg between the arms",
            ],
            history="{He} has long-standing poorly controlled hypertension.",
            result="CT angiography shows an intimal flap confined to the descending aorta.",
            sex="M",
            test="CT angiography of the chest",
            tx="Intravenous labetalol",
            tx_q="initial treatment",
            drug="labetalol",
            mech="Combined blockade of alpha-1 and beta adrenergic receptors",
            avoid=("Metoprolol", "Chest x-ray", "Echocardiography"),
        ),
    ],
    "Gastroenterology": [
        Condition(
            "Duodenal ulcer due to Helicobacter pylori",
            (30, 60),
            ["burning epigastric pain that improves with meals", "bloating", "nighttime epigastric pain"],
            result="Upper endoscopy shows a duodenal ulcer, and a biopsy urease test is positive.",
            tx="Omeprazole, clarithromycin and amoxicillin",
            drug="omeprazole",
            mech="Irreversible inhibition of the H+/K+ ATPase in parietal cells",
        ),
        Condition(
            "Gastroesophageal reflux disease",
            (30, 60),
            [
                "burning retrosternal pain after large meals",
                "regurgitation of sour fluid",
                "heartburn that is worse when lying down",
            ],
            result="There is no weight loss, difficulty swallowing or anemia.",
            tx="Omeprazole",
            tx_q="initial treatment",
        ),
        Condition(
            "Acute cholecystitis",
            acute=True,
            ages=(35, 60),
            findings=[
                "right upper quadrant pain for 10 hours that began after a fatty meal",
                "fever",
                "arrest of inspiration during palpation of the right upper quadrant",
            ],
            result="Ultrasound shows gallstones, gallbladder wall thickening and pericholecystic fluid.",
            sex="F",
            test="Right upper quadrant ultrasound",
            tx="Laparoscopic cholecystectomy",
            tx_q="definitive treatment",
        ),
        Condition(
            "Acute pancreatitis",
            acute=True,
            ages=(35, 60),
            findings=["severe epigastric pain radiating to the back", "repeated vomiting", "epigastric tenderness"],
            history="{He} drinks about ten beers a day.",
            result="Serum lipase is five times the upper limit of normal.",
            test="Serum lipase",
            tx="Intravenous fluid resuscitation and analgesia",
            tx_q="initial treatment",
        ),
        Condition(
            "Crohn disease",
            (18, 35),
            [
                "crampy right lower quadrant pain for several months",
                "non-bloody diarrhea",
                "weight loss",
                "a draining perianal fistula",
            ],
            result="Colonoscopy shows skip lesions with a cobblestone mucosa, and biopsies show "
            "non-caseating granulomas.",
            test="Colonoscopy with biopsy",
            tx="Infliximab",
            tx_q="treatment for this fistulizing disease",
            drug="infliximab",
            mech="Monoclonal antibody against tumor necrosis factor-alpha",
            avoid=("Mesalamine",),
        ),
        Condition(
            "Ulcerative colitis",
            (18, 35),
            ["bloody diarrhea with mucus", "tenesmus", "lower abdominal cramping"],
            history="{He} has four bowel movements a day and normal vital signs.",
            result="Colonoscopy shows continuous mucosal inflammation extending from the rectum, and "
            "biopsies show crypt abscesses.",
            test="Colonoscopy with biopsy",
            tx="Mesalamine",
            tx_q="initial treatment for this mild disease",
            drug="mesalamine",
            mech="Local inhibition of prostaglandin and leukotriene synthesis in the colonic mucosa",
            avoid=("Infliximab",),
        ),
        Condition(
            "Celiac disease",
            (20, 40),
            ["chronic diarrhea", "an itchy blistering rash on the elbows", "bloating", "iron deficiency anemia"],
            key=2,
            result="Serum anti-tissue transglutaminase IgA antibodies are elevated.",
            test="Serum anti-tissue transglutaminase IgA",
            test_q="initial diagnostic test",
            tx="Lifelong gluten-free diet",
            avoid=("Upper endoscopy",),
        ),
        Condition(
            "Hepatic encephalopathy",
            acute=True,
            ages=(50, 70),
            findings=["confusion", "day-night reversal", "a flapping tremor of the outstretched hands", "ascites"],
            history="{He} has alcoholic cirrhosis.",
            result="There is no focal neurological deficit and the blood glucose is normal.",
            tx="Lactulose",
            drug="lactulose",
            mech="Acidification of colonic contents, trapping ammonia as ammonium",
        ),
        Condition(
            "Achalasia",
            (30, 50),
            [
                "progressive difficulty swallowing both solids and liquids",
                "regurgitation of undigested food",
                "mild weight loss",
            ],
            result="A barium swallow shows a dilated esophagus with a bird's-beak narrowing at the "
            "gastroesophageal junction.",
            test="Esophageal manometry",
            tx="Laparoscopic Heller myotomy",
            tx_q="definitive treatment",
            avoid=("Upper endoscopy",),
        ),
    ],
    "Neurology": [
        Condition(
            "Acute ischemic stroke",
            acute=True,
            ages=(60, 80),
            findings=["sudden weakness of the right arm and face", "difficulty speaking", "a right-sided facial droop"],
            history="The symptoms began 90 minutes ago.",
            result="A noncontrast CT of the head shows no hemorrhage.",
            test="Noncontrast CT of the head",
            test_q="initial diagnostic test",
            tx="Intravenous alteplase",
            tx_q="next step in management",
            drug="alteplase",
            mech="Conversion of plasminogen to plasmin",
            avoid=("Carotid duplex ultrasound",),
        ),
        Condition(
            "Subarachnoid hemorrhage",
            acute=True,
            ages=(35, 60),
            findings=["a sudden severe headache described as the worst of {his} life", "neck stiffness", "vomiting"],
            result="A noncontrast CT of the head shows blood in the basal cisterns.",
            test="Noncontrast CT of the head",
            tx="Nimodipine",
            tx_q="drug to prevent delayed cerebral ischemia",
            drug="nimodipine",
            mech="Blockade of L-type calcium channels",
            avoid=("Lumbar puncture",),
        ),
        Condition(
            "Migraine with aura",
            (18, 40),
            [
                "recurrent throbbing one-sided headaches lasting 6 to 12 hours",
                "nausea",
                "sensitivity to light",
                "flickering zigzag lines in the vision before the headache",
            ],
            result="Neurological examination between attacks is normal.",
            sex="F",
            tx="Sumatriptan",
            tx_q="abortive treatment",
            drug="sumatriptan",
            mech="Agonism at serotonin 5-HT1B/1D receptors",
        ),
        Condition(
            "Myasthenia gravis",
            (20, 40),
            ["drooping eyelids that worsen at the end of the day", "double vision", "jaw fatigue when chewing"],
            result="Serum acetylcholine receptor antibodies are positive.",
            sex="F",
            test="Acetylcholine receptor antibody testing",
            tx="Pyridostigmine",
            tx_q="initial symptomatic treatment",
            drug="pyridostigmine",
            mech="Inhibition of acetylcholinesterase",
        ),
        Condition(
            "Parkinson disease",
            (60, 80),
            ["a resting tremor of the right hand", "slowness of movement", "cogwheel rigidity", "a shuffling gait"],
            tx="Carbidopa-levodopa",
            drug="levodopa",
            mech="Precursor that is converted to dopamine in the brain",
        ),
        Condition(
            "Guillain-Barre syndrome",
            acute=True,
            ages=(25, 55),
            findings=[
                "weakness of both legs ascending over five days",
                "absent ankle and knee reflexes",
                "tingling in the feet",
            ],
            history="{He} had a diarrheal illness three weeks ago.",
            result="Cerebrospinal fluid shows elevated protein with a normal cell count.",
            test="Lumbar puncture",
            tx="Intravenous immunoglobulin",
        ),
        Condition(
            "Trigeminal neuralgia",
            (50, 70),
            [
                "brief electric shock-like pain in the right cheek",
                "pain triggered by chewing",
                "pain triggered by touching the face",
            ],
            result="Neurological examination is normal.",
            tx="Carbamazepine",
            drug="carbamazepine",
            mech="Blockade of voltage-gated sodium channels",
        ),
        Condition(
            "Status epilepticus",
            acute=True,
            ages=(20, 50),
            findings=["a generalized tonic-clonic seizure that has lasted 10 minutes"],
            history="{He} has not regained consciousness, and the blood glucose is normal.",
            tx="Intravenous lorazepam",
            tx_q="next step in management",
            drug="lorazepam",
            mech="Increased frequency of GABA-A receptor chloride channel opening",
        ),
        Condition(
            "Multiple sclerosis",
            (20, 40),
            [
                "painful loss of vision in the left eye",
                "tingling of both legs",
                "an electric sensation down the spine when bending the neck",
            ],
            result="MRI of the brain shows several periventricular white matter lesions.",
            sex="F",
            test="MRI of the brain",
            tx="High-dose intravenous methylprednisolone",
            tx_q="treatment for this acute relapse",
        ),
    ],
    "Infectious diseases": [
        Condition(
            "Pneumococcal meningitis",
            acute=True,
            ages=(20, 50),
            findings=["fever", "neck stiffness", "severe headache", "confusion"],
            key=2,
            result="Cerebrospinal fluid shows neutrophilic pleocytosis, low glucose and gram-positive diplococci.",
            test="Lumbar puncture",
            tx="Ceftriaxone, vancomycin and dexamethasone",
            tx_q="empiric treatment",
            drug="ceftriaxone",
            avoid=("Blood cultures",),
            mech="Binding to penicillin-binding proteins, blocking peptidoglycan cross-linking",
        ),
        Condition(
            "Acute uncomplicated cystitis",
            (20, 40),
            ["burning on urination", "urinary frequency", "suprapubic pain"],
            history="{He} has no fever or flank pain and is not pregnant.",
            result="Urinalysis shows positive leukocyte esterase and nitrites.",
            sex="F",
            test="Urinalysis",
            tx="Nitrofurantoin",
            drug="nitrofurantoin",
            mech="Damage to bacterial DNA and ribosomes by reactive intermediates",
        ),
        Condition(
            "Primary syphilis",
            (20, 40),
            ["a painless indurated ulcer on the penis", "painless enlarged inguinal lymph nodes"],
            result="Darkfield microscopy of the ulcer shows spirochetes.",
            sex="M",
            test="Darkfield microscopy",
            tx="Intramuscular benzathine penicillin G",
            drug="penicillin G",
            mech="Binding to penicillin-binding proteins, blocking peptidoglycan cross-linking",
            avoid=("Doxycycline",),
        ),
        Condition(
            "Falciparum malaria",
            acute=True,
            ages=(20, 50),
            findings=["cyclic fevers with shaking chills", "headache", "an enlarged spleen"],
            history="{He} returned from sub-Saharan Africa two weeks ago and took no prophylaxis.",
            result="Thick and thin blood smears show ring-shaped trophozoites in red cells.",
            test="Thick and thin blood smears",
            tx="Artemether-lumefantrine",
            avoid=("Blood cultures",),
        ),
        Condition(
            "Pulmonary tuberculosis",
            (25, 60),
            ["a productive cough for three months", "night sweats", "weight loss", "coughing up blood"],
            history="{He} recently immigrated from a country where tuberculosis is common.",
            result="A sputum acid-fast bacilli smear is positive, and chest x-ray shows an upper lobe cavity.",
            test="Sputum acid-fast bacilli smear and culture",
            tx="Rifampin, isoniazid, pyrazinamide and ethambutol",
            drug="isoniazid",
            mech="Inhibition of mycolic acid synthesis",
        ),
        Condition(
            "Herpes zoster",
            (60, 80),
            [
                "a painful band of grouped vesicles on one side of the chest",
                "burning pain that preceded the rash by three days",
            ],
            tx="Valacyclovir",
            drug="valacyclovir",
            mech="Inhibition of viral DNA polymerase after phosphorylation by viral thymidine kinase",
        ),
        Condition(
            "Early Lyme disease",
            (20, 60),
            ["an expanding red rash with central clearing on the thigh", "fever", "muscle aches"],
            history="{He} went camping in Connecticut two weeks ago.",
            tx="Doxycycline",
            drug="doxycycline",
            mech="Binding to the 30S ribosomal subunit, blocking aminoacyl-tRNA attachment",
        ),
        Condition(
            "Clostridioides difficile colitis",
            (60, 85),
            ["watery diarrhea", "lower abdominal cramps", "fever"],
            history="{He} finished a course of clindamycin one week ago.",
            result="Stool testing for C. difficile toxin is positive.",
            test="Stool testing for C. difficile toxin",
            tx="Oral vancomycin",
            drug="oral vancomycin",
            mech="Binding to D-alanyl-D-alanine, blocking peptidoglycan polymerization",
        ),
        Condition(
            "Infectious mononucleosis",
            (15, 22),
            ["sore throat", "posterior cervical lymphadenopathy", "fever", "marked fatigue", "an enlarged spleen"],
            key=2,
            result="A heterophile antibody test is positive, and the blood smear shows atypical lymphocytes.",
            test="Heterophile antibody test",
            tx="Supportive care and avoidance of contact sports",
        ),
    ],
    "Endocrinology": [
        Condition(
            "Diabetic ketoacidosis",
            acute=True,
            ages=(15, 30),
            findings=[
                "increased urination and thirst for a week",
                "abdominal pain",
                "vomiting",
                "deep rapid breathing",
                "a fruity breath odor",
            ],
            result="Blood glucose is 520 mg/dL, arterial pH is 7.12 and serum ketones are positive.",
            tx="Intravenous normal saline and insulin infusion",
            tx_q="initial treatment",
        ),
        Condition(
            "Type 2 diabetes mellitus",
            (45, 65),
            ["increased thirst and urination", "obesity", "fatigue", "blurred vision"],
            result="Hemoglobin A1c is 8.1% and kidney function is normal.",
            test="Hemoglobin A1c",
            tx="Metformin",
            tx_q="initial drug treatment",
            drug="metformin",
            mech="Decreased hepatic gluconeogenesis via AMP-activated protein kinase",
        ),
        Condition(
            "Graves disease",
            (20, 40),
            [
                "heat intolerance",
                "weight loss despite increased appetite",
                "a fine tremor",
                "bulging eyes",
                "a diffusely enlarged nontender thyroid",
            ],
            result="TSH is suppressed, free T4 is elevated and TSH receptor antibodies are positive.",
            sex="F",
            test="Serum TSH and free T4",
            tx="Methimazole",
            tx_q="initial drug treatment",
            drug="methimazole",
            mech="Inhibition of thyroid peroxidase",
        ),
        Condition(
            "Hashimoto thyroiditis",
            (30, 60),
            [
                "fatigue",
                "cold intolerance",
                "weight gain",
                "constipation",
                "dry skin",
                "delayed relaxation of the ankle reflexes",
            ],
            key=2,
            result="TSH is elevated, free T4 is low and anti-thyroid peroxidase antibodies are positive.",
            sex="F",
            test="Serum TSH and free T4",
            tx="Levothyroxine",
            drug="levothyroxine",
            mech="Replacement of thyroxine, which is converted to triiodothyronine in tissues",
        ),
        Condition(
            "Primary adrenal insufficiency",
            (25, 50),
            ["fatigue and weight loss", "darkening of the skin and gums", "salt craving", "dizziness on standing"],
            key=2,
            result="Serum sodium is low, potassium is high, and morning cortisol is low with a high ACTH.",
            test="Cosyntropin stimulation test",
            tx="Hydrocortisone and fludrocortisone",
        ),
        Condition(
            "Cushing syndrome",
            (30, 50),
            [
                "central obesity",
                "wide purple abdominal striae",
                "proximal muscle weakness",
                "easy bruising",
                "new high blood pressure",
            ],
            key=2,
            history="{He} takes no glucocorticoid medication.",
            test="24-hour urinary free cortisol",
            avoid=("Low-dose dexamethasone suppression test",),
        ),
        Condition(
            "Primary hyperparathyroidism",
            (50, 70),
            ["recurrent kidney stones", "constipation", "bone pain", "low mood"],
            key=2,
            result="Serum calcium and parathyroid hormone are elevated and phosphate is low.",
            sex="F",
            test="Serum calcium and parathyroid hormone",
            tx="Parathyroidectomy",
            tx_q="definitive treatment",
        ),
        Condition(
            "Pheochromocytoma",
            (30, 50),
            ["episodic headaches", "palpitations", "profuse sweating", "spikes of very high blood pressure"],
            key=3,
            result="Plasma free metanephrines are markedly elevated, and CT shows a 4-cm adrenal mass.",
            test="Plasma free metanephrines",
            tx="Phenoxybenzamine followed by adrenalectomy",
            drug="phenoxybenzamine",
            mech="Irreversible blockade of alpha-adrenergic receptors",
        ),
        Condition(
            "Prolactinoma",
            (20, 35),
            ["no menstrual periods for six months", "milky nipple discharge"],
            history="A pregnancy test is negative.",
            result="Serum prolactin is markedly elevated and MRI shows a 7-mm pituitary adenoma.",
            sex="F",
            test="Serum prolactin",
            tx="Cabergoline",
            drug="cabergoline",
            mech="Agonism at dopamine D2 receptors",
            avoid=("Serum TSH and free T4",),
        ),
    ],
    "Hematology": [
        Condition(
            "Iron deficiency anemia",
            (25, 45),
            ["fatigue", "heavy menstrual periods", "a craving to chew ice", "pale conjunctivae"],
            key=2,
            result="Hemoglobin is 9.1 g/dL with a low mean corpuscular volume and a low ferritin.",
            sex="F",
            test="Serum ferritin",
            tx="Oral ferrous sulfate",
            avoid=("Complete blood count and peripheral smear",),
        ),
        Condition(
            "Pernicious anemia",
            (55, 75),
            [
                "fatigue",
                "numbness and tingling in the feet",
                "loss of vibration sense in the toes",
                "a smooth beefy red tongue",
            ],
            key=2,
            result="Hemoglobin is 9.0 g/dL, mean corpuscular volume is 115 fL, and the smear shows "
            "hypersegmented neutrophils.",
            test="Serum vitamin B12 level",
            tx="Intramuscular cyanocobalamin",
            avoid=("Complete blood count and peripheral smear",),
        ),
        Condition(
            "Sickle cell vaso-occlusive crisis",
            acute=True,
            ages=(15, 30),
            findings=["severe pain in the back and legs", "a low-grade fever"],
            history="{He} has sickle cell disease and has been dehydrated after a long run.",
            result="Hemoglobin is at {his} baseline and the chest x-ray is clear.",
            tx="Intravenous fluids and opioid analgesia",
            tx_q="initial treatment",
            drug="hydroxyurea",
            mech_with="sickle cell disease and recurrent pain crises",
            mech="Increased production of fetal hemoglobin",
        ),
        Condition(
            "Immune thrombocytopenia",
            (20, 40),
            ["easy bruising", "petechiae on the legs", "bleeding gums"],
            history="{He} had a viral illness three weeks ago.",
            result="Platelet count is 12,000/mm3, hemoglobin and white cell count are normal, and the "
            "smear shows large platelets.",
            sex="F",
            test="Complete blood count and peripheral smear",
            test_q="initial diagnostic test",
            tx="Oral prednisone",
            avoid=("Therapeutic plasma exchange",),
        ),
        Condition(
            "Hemophilia A",
            (5, 14),
            ["a painful swollen knee after minor trauma", "prolonged bleeding after a tooth extraction"],
            history="{His} maternal uncle has a bleeding disorder.",
            result="The partial thromboplastin time is prolonged, while prothrombin time and platelet "
            "count are normal.",
            sex="M",
            test="Factor VIII activity assay",
            tx="Recombinant factor VIII concentrate",
            avoid=("Complete blood count and peripheral smear",),
        ),
        Condition(
            "Deep vein thrombosis",
            (40, 70),
            ["a swollen tender left calf", "pitting edema of the left leg"],
            history="{He} returned from a 14-hour flight three days ago.",
            result="Compression ultrasound shows a noncompressible left popliteal vein.",
            test="Compression ultrasonography of the leg",
            tx="Apixaban",
            drug="apixaban",
            mech="Direct inhibition of factor Xa",
        ),
        Condition(
            "Chronic myeloid leukemia",
            (40, 65),
            ["fatigue", "a massively enlarged spleen", "early satiety", "night sweats"],
            key=2,
            result="White cell count is 150,000/mm3 with granulocytes at all stages of maturation.",
            test="Testing for the BCR-ABL fusion gene",
            tx="Imatinib",
            drug="imatinib",
            mech="Inhibition of the BCR-ABL tyrosine kinase",
            avoid=("Complete blood count and peripheral smear",),
        ),
        Condition(
            "Thrombotic thrombocytopenic purpura",
            acute=True,
            ages=(25, 45),
            findings=["fever", "confusion", "petechiae", "dark urine"],
            result="Platelets are 15,000/mm3, creatinine is elevated and the smear shows schistocytes.",
            sex="F",
            tx="Therapeutic plasma exchange",
            tx_q="next step in management",
            avoid=("Oral prednisone",),
        ),
    ],
    "Nephrology": [
        Condition(
            "Minimal change disease",
            (3, 8),
            ["swelling around the eyes", "frothy urine", "generalized edema"],
            result="Urinalysis shows 4+ protein without blood, and serum albumin is 1.9 g/dL.",
            tx="Oral prednisone",
            avoid=("Lisinopril",),
        ),
        Condition(
            "Post-streptococcal glomerulonephritis",
            (6, 12),
            ["cola-colored urine", "puffy eyelids", "high blood pressure"],
            history="{He} had a sore throat two weeks ago.",
            result="Urinalysis shows red cell casts, and serum C3 is low.",
            test="Antistreptolysin O titer and serum complement",
            tx="Supportive care with salt restriction and a loop diuretic",
            avoid=("Lisinopril",),
        ),
        Condition(
            "Hyperkalemia",
            acute=True,
            ages=(55, 75),
            findings=["muscle weakness", "palpitations"],
            history="{He} has chronic kidney disease and recently started lisinopril and spironolactone.",
            result="Serum potassium is 7.2 mEq/L and the electrocardiogram shows peaked T waves.",
            tx="Intravenous calcium gluconate",
            tx_q="first step in management",
            drug="calcium gluconate",
            mech="Stabilization of the cardiac myocyte membrane",
        ),
        Condition(
            "Ureteral stone",
            acute=True,
            ages=(30, 50),
            findings=["sudden severe colicky flank pain radiating to the groin", "blood in the urine", "restlessness"],
            result="CT shows a 5-mm stone in the distal ureter without hydronephrosis.",
            sex="M",
            test="Noncontrast CT of the abdomen and pelvis",
            tx="Tamsulosin",
            tx_q="drug to help the stone pass",
            drug="tamsulosin",
            mech="Blockade of alpha-1 adrenergic receptors in ureteral smooth muscle",
            avoid=("Renal ultrasound",),
        ),
        Condition(
            "Prerenal acute kidney injury",
            acute=True,
            ages=(65, 85),
            findings=["three days of vomiting and diarrhea", "dry mucous membranes", "dizziness on standing"],
            result="The BUN to creatinine ratio is 30 and the fractional excretion of sodium is 0.4%.",
            test="Fractional excretion of sodium",
            tx="Intravenous isotonic saline",
        ),
        Condition(
            "Syndrome of inappropriate antidiuretic hormone secretion",
            (60, 75),
            ["confusion", "nausea", "no edema and a normal blood pressure"],
            history="{He} has small cell lung cancer.",
            result="Serum sodium is 121 mEq/L, serum osmolality is low and urine osmolality is 600 mOsm/kg.",
            test="Urine osmolality and urine sodium",
            tx="Fluid restriction",
            tx_q="initial treatment",
        ),
        Condition(
            "Autosomal dominant polycystic kidney disease",
            (30, 45),
            ["bilateral flank masses", "high blood pressure", "episodes of blood in the urine"],
            history="{His} father was on dialysis.",
            result="Ultrasound shows multiple cysts in both enlarged kidneys.",
            test="Renal ultrasound",
            tx="Lisinopril",
            tx_q="drug to control blood pressure",
            drug="lisinopril",
            mech="Inhibition of angiotensin-converting enzyme",
            avoid=("Noncontrast CT of the abdomen and pelvis",),
        ),
        Condition(
            "Lithium-induced nephrogenic diabetes insipidus",
            (30, 50),
            ["excessive thirst", "passing large volumes of dilute urine"],
            history="{He} has taken lithium for bipolar disorder for ten years.",
            result="Urine osmolality stays low after water deprivation and does not rise after desmopressin.",
            test="Water deprivation test",
            tx="Amiloride",
            drug="amiloride",
            mech="Blockade of epithelial sodium channels in the collecting duct",
        ),
    ],
}

OPENINGS = [
    "A {age}-year-old {who} presents with {findings}.",
    "A {age}-year-old {who} comes to the physician because of {findings}.",
    "A {age}-year-old {who} is brought to the emergency department with {findings}.",
    "A {age}-year-old {who} is evaluated for {findings}.",
]
QUESTION = {
    "diagnosis": "Which of the following is the most likely diagnosis?",
    "test": "Which of the following is the most appropriate {test_q}?",
    "treatment": "Which of the following is the most appropriate {tx_q}?",
    "mechanism": "Which of the following is the mechanism of action of this drug?",
}


def _who(age: int, sex: str) -> tuple[str, dict]:
    male = sex == "M"
    if age < 13:
        word = "boy" if male else "girl"
    elif age < 18:
        word = "adolescent boy" if male else "adolescent girl"
    else:
        word = "man" if male else "woman"
    pron = dict(He="He", he="he", His="His", his="his") if male else dict(He="She", he="she", His="Her", his="her")
    return word, pron


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _options(rng: random.Random, answer: str, pool: list[str], avoid: tuple[str, ...]) -> list[str]:
    cands = sorted({p for p in pool if p != answer and p not in avoid})
    if len(cands) < 3:
        raise ValueError(f"not enough distractors for {answer!r}")
    opts = rng.sample(cands, 3) + [answer]
    rng.shuffle(opts)
    return opts


def make_question(rng: random.Random, c: Condition, qtype: str, pools: dict) -> tuple[str, str, list[str]]:
    sex = c.sex if c.sex != "any" else rng.choice("MF")
    age = rng.randint(*c.ages)
    who, pron = _who(age, sex)
    n = len(c.findings)
    k = rng.randint(max(c.key, min(2, n)), n)
    rest = rng.sample(c.findings[c.key :], k - c.key)
    findings = c.findings[: c.key] + [f for f in c.findings[c.key :] if f in rest]
    findings = [f.format(**pron) for f in findings]
    opening = rng.choice(OPENINGS if c.acute else [o for o in OPENINGS if "emergency" not in o])
    parts = [opening.format(age=age, who=who, findings=_join(findings))]
    if c.history:
        parts.append(c.history.format(**pron))
    if qtype == "mechanism":
        parts = [f"A {age}-year-old {who} with {c.mech_with or _lower_name(c.name)} is started on {c.drug}."]
        answer = c.mech
        pool = pools["mech"]
    elif qtype == "diagnosis":
        if c.result:
            parts.append(c.result.format(**pron))
        answer, pool = c.name, pools["diagnosis"]
    elif qtype == "test":
        answer, pool = c.test, pools["test"]
    else:
        if c.result:
            parts.append(c.result.format(**pron))
        parts.append(f"The diagnosis is {_lower_name(c.name)}.")
        answer, pool = c.tx, pools["treatment"]
    parts.append(QUESTION[qtype].format(tx_q=c.tx_q, test_q=c.test_q))
    return " ".join(parts), answer, _options(rng, answer, pool, c.avoid)


# Proper names that keep their capital letter inside a sentence.
_KEEP_CAPS = (
    "Crohn",
    "Graves",
    "Hashimoto",
    "Guillain",
    "Parkinson",
    "Helicobacter",
    "Lyme",
    "Cushing",
    "Clostridioides",
)


def _lower_name(name: str) -> str:
    return name if name.startswith(_KEEP_CAPS) else name[0].lower() + name[1:]


EXTRA_DISTRACTORS = {
    # never correct for any condition of the specialty (checked by hand)
    "Cardiology": {
        "test": ["Exercise stress testing", "Serum troponin I", "Chest x-ray", "Holter monitoring"],
        "mech": ["Inhibition of HMG-CoA reductase"],
    },
    "Gastroenterology": {
        "test": ["Abdominal x-ray", "Hepatitis B serology"],
        "mech": ["Blockade of histamine H2 receptors"],
    },
    "Neurology": {
        "test": ["Electroencephalography", "Carotid duplex ultrasound"],
        "mech": ["Inhibition of monoamine oxidase B"],
    },
    "Infectious diseases": {"test": ["Blood cultures"], "mech": ["Inhibition of DNA gyrase"]},
    "Endocrinology": {"test": ["Serum insulin level"], "mech": ["Stimulation of insulin release from beta cells"]},
    "Hematology": {
        "test": ["Hemoglobin electrophoresis"],
        "treatment": ["Platelet transfusion", "Oral folic acid"],
        "mech": ["Inhibition of vitamin K epoxide reductase"],
    },
    "Nephrology": {
        "test": ["Kidney biopsy"],
        "treatment": ["Oral sodium bicarbonate"],
        "mech": ["Inhibition of carbonic anhydrase"],
    },
}


def build(per_specialty: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out: list[dict] = []
    for spec in sorted(SPECIALTIES):
        conds = SPECIALTIES[spec]
        extra = EXTRA_DISTRACTORS.get(spec, {})
        pools = {
            "diagnosis": [c.name for c in conds] + extra.get("diagnosis", []),
            "test": [c.test for c in conds if c.test] + extra.get("test", []),
            "treatment": [c.tx for c in conds if c.tx] + extra.get("treatment", []),
            "mech": [c.mech for c in conds if c.mech] + extra.get("mech", []),
        }
        items = [
            (c, t)
            for c in conds
            for t in ("diagnosis", "test", "treatment", "mechanism")
            if (t == "diagnosis")
            or (t == "test" and c.test)
            or (t == "treatment" and c.tx)
            or (t == "mechanism" and c.mech)
        ]
        seen: set[str] = set()
        n = 0
        tries = 0
        while n < per_specialty:
            tries += 1
            if tries > 100 * per_specialty:
                raise RuntimeError(f"{spec}: cannot make {per_specialty} distinct questions")
            c, t = items[tries % len(items)] if tries <= len(items) else rng.choice(items)
            q, a, opts = make_question(rng, c, t, pools)
            if q in seen:
                continue
            seen.add(q)
            n += 1
            slug = spec.lower().replace(" ", "-")
            out.append(
                {
                    "id": f"demo-{slug}-{n:03d}",
                    "Question": q,
                    "Specialty": spec,
                    "Options": opts,
                    "Answer": a,
                    "Type": t,
                    "Condition": c.name,
                }
            )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--per-specialty", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    qs = build(args.per_specialty, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(qs, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(qs)} questions to {args.out}")
    for spec, n in sorted(Counter(q["Specialty"] for q in qs).items()):
        types = Counter(q["Type"] for q in qs if q["Specialty"] == spec)
        print(f"  {spec}: {n} {dict(sorted(types.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
